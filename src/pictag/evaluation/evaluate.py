"""``pictag evaluate``: a run on its test split -> ``report.json`` and a self-contained
``report.html``; and the tuning of decision parameters on the validation split.

The report has one section per head, written by the head's kind (metrics at the run's tuned
decision parameters, per-label tables and curves), the share of images on which every head is
right, and the worst mistakes. Parameters tuned here are written into ``pictag.json``, which
prediction, export and serving read, so every consumer decides the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pictag.config import Config, HeadConfig
from pictag.data.schema import Head, Sample
from pictag.evaluation.html import render_html
from pictag.evaluation.inference import resolve_device
from pictag.evaluation.metrics import all_heads_correct, head_report
from pictag.evaluation.run_extras import audit_summary, read_history, saved_fit
from pictag.evaluation.run_inference import infer
from pictag.evaluation.samples import eval_samples
from pictag.fileio import write_json, write_text
from pictag.heads import Params, get_kind
from pictag.run import load_run, write_params

log = logging.getLogger(__name__)
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
MAX_MISTAKES = 24


def evaluate_run(
    run_dir: str | Path,
    data_config: str | Path | None = None,
    split: str | None = None,
    tta: bool = False,
    out_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run folder and write ``report.json`` and ``report.html``.

    Args:
        run_dir: The run folder.
        data_config: None (the run's own data and ``splits.csv``), a split file (CSV) over the
            run's data, or a YAML config of other data (see :mod:`pictag.evaluation.samples`).
        split: ``test`` (falls back to ``val`` when the run has no test images), ``val``,
            ``train`` or ``all``. None: ``all`` for a data config of other data (less the
            images the run trained or validated on), else ``test``.
        tta: Average with horizontally flipped images (photos only: not for text or digits).
        out_dir: Where the reports go; default ``run_dir``.
        progress: Show progress bars.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The report as written to ``report.json`` (undefined metrics are None).

    Raises:
        ValueError: The split has no usable images.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    run = load_run(run_dir, resolve_device(device))
    samples, used = eval_samples(run, run_dir, data_config, split, progress)
    if not samples:
        raise ValueError(f"no usable images in the {used} split of {run_dir}; nothing to evaluate")
    probs, targets = infer(run, samples, tta, progress, run_dir)
    report = {
        "run": str(run_dir),
        "split": used,
        "n_images": len(samples),
        "tta": tta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **build_sections(run.heads, run.params, samples, probs, targets),
    }
    report["audit"] = audit_summary(run_dir, out_dir)
    report = json_ready(report)
    write_json(out_dir / REPORT_JSON, report)
    history = read_history(run_dir) or saved_fit(run.meta)
    write_text(out_dir / REPORT_HTML, render_html(report, history))
    return report


def tune_run_params(
    run_dir: str | Path, progress: bool = True, device: str = "auto"
) -> dict[str, Params]:
    """Tune every head's decision parameters on the run's validation split and store them.

    Each head's kind tunes with the head's config (``threshold_by``, ``threshold_target``).
    Training tunes in memory on the chosen epoch's validation outputs
    (:func:`pictag.training.trainer.train`); this re-runs the model, for a run whose outputs
    are gone or whose split changed.

    Returns:
        Head name -> tuned parameters. Without validation images the stored ones are returned
        unchanged.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, resolve_device(device))
    samples, _ = eval_samples(run, run_dir, None, "val", progress)
    if not samples:
        log.warning("no validation images: decision thresholds are left as they are")
        return run.params
    probs, targets = infer(run, samples, False, progress)
    tuned = tune_params(run.heads, run.config, probs, targets)
    write_params(run_dir, tuned)
    return tuned


def tune_params(
    heads: Mapping[str, Head],
    config: Config,
    probs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
) -> dict[str, Params]:
    """Each head's decision parameters chosen by its kind on validation outputs."""
    return {
        name: get_kind(head.kind).tune(
            probs[name], targets[name], head, config.heads.get(name, HeadConfig())
        )
        for name, head in heads.items()
    }


def build_sections(
    heads: dict[str, Head],
    params: Mapping[str, Params],
    samples: list[Sample],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The ``heads``, ``all_heads_correct`` (several heads) and ``mistakes`` of a report."""
    sections = {
        name: head_report(head, probs[name], targets[name], params[name])
        for name, head in heads.items()
    }
    result: dict[str, Any] = {"heads": sections}
    if len(heads) > 1:
        result["all_heads_correct"] = all_heads_correct(heads, probs, targets, params)
    result["mistakes"] = worst_mistakes(heads, params, samples, probs, targets)
    return result


def worst_mistakes(
    heads: Mapping[str, Head],
    params: Mapping[str, Params],
    samples: list[Sample],
    probs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    limit: int = MAX_MISTAKES,
) -> list[dict[str, Any]]:
    """Images with a wrong head, highest loss (lowest probability of the truth) first.

    The loss of an image is the sum over heads of each kind's per-image loss (cross-entropy of
    the true class, mean binary cross-entropy over the known tags).
    """
    loss, wrong = np.zeros(len(samples)), np.zeros(len(samples), dtype=bool)
    decided = {}
    for name, head in heads.items():
        kind = get_kind(head.kind)
        decided[name] = kind.decide(probs[name], params[name])
        known, right = kind.judge(decided[name], targets[name])
        loss += kind.image_loss(probs[name], targets[name])
        wrong |= known & ~right
    order = [i for i in np.argsort(-loss, kind="stable") if wrong[i]][:limit]
    return [_mistake(i, heads, decided, samples, probs, targets, loss[i]) for i in order]


def _mistake(
    row: int,
    heads: Mapping[str, Head],
    decided: Mapping[str, np.ndarray],
    samples: list[Sample],
    probs: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    loss: float,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": str(samples[row].path), "where": samples[row].where}
    entry.update(loss=float(loss), true={}, pred={}, scores={})
    places = {}
    for name, head in heads.items():
        kind, target = get_kind(head.kind), np.asarray(targets[name][row])
        true, pred, scores = kind.describe(head, probs[name][row], target, decided[name][row])
        entry["true"][name], entry["pred"][name], entry["scores"][name] = true, pred, scores
        if kind.places is not None:
            places[name] = kind.places(head, target, decided[name][row])
    if places:
        entry["boxes"] = places
    return entry


def json_ready(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_table(report: dict[str, Any]) -> str:
    """A few key metrics per head, then each head's per-label table (and confusion) from its
    kind, as plain text for the terminal."""
    tta = " with TTA" if report.get("tta") else ""
    title = f"{report['run']}: {report['split']} split, {report['n_images']} images{tta}"
    rows = [["head", "kind", "n", "metrics"]]
    for name, section in report["heads"].items():
        keys = get_kind(section["kind"]).summary_metrics
        values = section.get("metrics", {})
        shown = "  ".join(f"{key} {_number(values.get(key))}" for key in keys if key in values)
        rows.append([name, section["kind"], str(section.get("n", "")), shown])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]
    lines.insert(0, title)
    for name, section in report["heads"].items():
        binary = section.get("binary") or {}
        point = binary.get("operating_point")
        if point:  # what the tuned threshold buys and costs
            lines.append(
                f"{name}: positive {binary.get('positive')!r} when P >= "
                f"{_number(point.get('threshold'))}: recall {_number(point.get('recall'))}, "
                f"precision {_number(point.get('precision'))}, "
                f"false-positive rate {_number(point.get('fpr'))}"
            )
    for name, section in report["heads"].items():  # per label, as classification_report
        lines += ["", get_kind(section["kind"]).report_text(name, section)]
    if "all_heads_correct" in report:
        lines += ["", f"all heads correct: {_number(report['all_heads_correct'])}"]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"
