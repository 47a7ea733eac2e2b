"""``pictag audit RUN_DIR``: wrong labels, near-duplicates and outliers among a run's images,
written to ``audit.json`` and ``audit.html`` (and, when asked, a copy of the label CSV with the
suggestions in new columns). Nothing is changed: a person reviews the findings.

How: pooled features of every image of the run (train, val and test) from the pretrained
backbone (see :mod:`pictag.auditing.features`); out-of-fold probabilities of linear heads fitted on
them; each head's kind ranks its label issues with cleanlab; near-duplicates are pairs of
almost identical perceptual hashes or pretrained features; outliers are scored by cleanlab's
``OutOfDistribution`` on the features.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pictag.auditing.features import audit_features, out_of_fold_probs
from pictag.auditing.fix_csv import write_fix_csv
from pictag.auditing.html import render_audit_html
from pictag.auditing.outliers import outlier_scores, top_outliers
from pictag.data.near_duplicates import (
    NearDuplicate,
    embedding_pairs,
    hash_files,
    near_duplicate_pairs,
)
from pictag.data.schema import Sample
from pictag.evaluation.evaluate import json_ready
from pictag.evaluation.samples import eval_samples
from pictag.fileio import write_json, write_text
from pictag.heads import get_kind
from pictag.run import AUDIT_HTML, AUDIT_JSON, LoadedRun, load_run, read_splits
from pictag.training.runtime import setup_runtime

log = logging.getLogger(__name__)
# Pretrained Lite0 features of one photo cropped, re-encoded or shifted are this close; on
# utkface-5k the pairs at >= 0.96 that the hashes missed were all real copies, while three
# pairs of different faces came in at 0.950-0.954 (benchmarks/near_duplicates_embeddings.py).
MIN_COSINE = 0.96


def audit_run(
    run_dir: str | Path,
    *,
    folds: int = 5,
    out_dir: str | Path | None = None,
    fix_csv: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Audit a run's images and labels; write ``audit.json`` and ``audit.html``.

    Args:
        run_dir: The run folder (its config, heads and split).
        folds: Folds of the out-of-fold linear heads.
        out_dir: Where the files go; default ``run_dir``.
        fix_csv: Also write a copy of the run's label CSV with each head's suggested label and
            its score in new columns (``audit_<head>``, ``audit_<head>_score``).
        progress: Show progress bars.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The audit, as written to ``audit.json``.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    runtime = setup_runtime(device, "off", threads=0)
    run = load_run(run_dir, runtime.device)
    samples, _ = eval_samples(run, run_dir, None, "all", progress)
    split_of = {path: name for name, paths in read_splits(run_dir).items() for path in paths}
    features, targets, source = audit_features(run, samples, runtime, progress)
    pretrained = run.config.model.pretrained != "none"
    seed = run.config.data.seed
    probs = out_of_fold_probs(run, samples, features, targets, folds, seed)
    audit = {
        "run": str(run_dir),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(samples),
        "features": source,
        "folds": folds,
        "label_issues": label_issues(run, samples, probs, targets, split_of),
        "near_duplicates": near_duplicates(
            samples, split_of, run.config.data.max_pixels, features if pretrained else None
        ),
        "outliers": outliers(samples, features, split_of),
    }
    audit = json_ready(audit)
    write_json(out / AUDIT_JSON, audit)
    write_text(out / AUDIT_HTML, render_audit_html(audit))
    if fix_csv:
        audit["fix_csv"] = str(write_fix_csv(run.config.data, audit["label_issues"], out))
    return audit


def label_issues(
    run: LoadedRun,
    samples: list[Sample],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    split_of: dict[Path, str],
) -> list[dict[str, Any]]:
    """Every head's findings, its kind ranking them, then all heads merged, lowest score first."""
    found = []
    for name, head in run.heads.items():
        try:
            items = get_kind(head.kind).label_issues(head, probs[name], targets[name])
        except ValueError as err:  # e.g. one class left: the other heads are still audited
            log.warning("audit: no label issues for head %r: %s", name, err)
            continue
        for item in items:
            sample = samples[item["index"]]
            found.append(
                {
                    "image": str(sample.path),
                    "where": sample.where,
                    "head": name,
                    "split": split_of.get(sample.path, ""),
                    **{key: item[key] for key in ("given", "suggested", "score", "issue")},
                }
            )
    return sorted(found, key=lambda item: item["score"])


def near_duplicates(
    samples: list[Sample],
    split_of: dict[Path, str],
    max_pixels: int,
    features: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Pairs of images that show one photo, across splits (leakage) first, then closest first.

    Perceptual hashes find it resized, re-encoded, shifted or mirrored (``method: hash``,
    ``distance`` in bits); pretrained ``features`` also find it cropped (``method: embedding``,
    ``distance`` = 1 - cosine, from ``MIN_COSINE``). Only pretrained features: a network
    trained from scratch on few images puts distinct images of one class at one point.
    """
    paths, hashes = hash_files([sample.path for sample in samples], max_pixels)
    found = [_pair(pair, "hash", split_of) for pair in near_duplicate_pairs(paths, hashes)]
    if features is not None:
        seen = {frozenset((item["a"], item["b"])) for item in found}
        for pair in embedding_pairs([sample.path for sample in samples], features, MIN_COSINE):
            if frozenset((str(pair.a), str(pair.b))) not in seen:
                found.append(_pair(pair, "embedding", split_of))
    return sorted(
        found, key=lambda item: (item["splits"][0] == item["splits"][1], item["distance"])
    )


def _pair(pair: NearDuplicate, method: str, split_of: dict[Path, str]) -> dict[str, Any]:
    return {
        "a": str(pair.a),
        "b": str(pair.b),
        "method": method,
        "distance": int(pair.distance) if method == "hash" else round(float(pair.distance), 4),
        "flipped": pair.flipped,
        "splits": [split_of.get(Path(pair.a), ""), split_of.get(Path(pair.b), "")],
    }


def outliers(
    samples: list[Sample], features: np.ndarray, split_of: dict[Path, str]
) -> list[dict[str, Any]]:
    """The most atypical images (see :func:`pictag.auditing.outliers.top_outliers`)."""
    scores = outlier_scores(features)
    return [
        {
            "image": str(samples[i].path),
            "split": split_of.get(samples[i].path, ""),
            "score": float(scores[i]),
        }
        for i in top_outliers(scores)
    ]
