"""``pictag evaluate``: a run on its test split -> ``report.json`` and a self-contained
``report.html``; and the tuning of multilabel thresholds on the validation split.

The report has one section per head (metrics at the run's tuned thresholds and at 0.5,
per-label tables and curves), the share of images on which every head is right, and the worst
mistakes. Thresholds tuned here are written into ``pictag.json``, which prediction, export and
serving read, so every consumer decides the same way.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pictag.config import HeadConfig
from pictag.data.dataset import ImageDataset
from pictag.data.schema import Head, Sample
from pictag.data.transforms import eval_transform
from pictag.evaluation.html import render_html
from pictag.evaluation.inference import predict_logits, probabilities, resolve_device
from pictag.evaluation.metrics import all_heads_correct, decisions, head_report
from pictag.evaluation.samples import eval_samples
from pictag.evaluation.thresholds import tune_thresholds
from pictag.fileio import write_json, write_text
from pictag.models.run import META_FILE, LoadedRun, load_run

log = logging.getLogger(__name__)
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
HISTORY_FILE = "metrics.jsonl"
MAX_MISTAKES = 24
_EPS = 1e-7  # keeps log(0) finite in the per-image loss
SUMMARY_METRICS = {
    "multiclass": ("accuracy", "f1_macro", "roc_auc_ovr", "ece"),
    "multilabel": ("mAP", "f1_micro", "f1_macro", "subset_accuracy"),
}


def evaluate_run(
    run_dir: str | Path,
    data_config: str | Path | None = None,
    split: str = "test",
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
            ``train`` or ``all``.
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
    probs, targets = _infer(run, samples, tta, progress)
    report = {
        "run": str(run_dir),
        "split": used,
        "n_images": len(samples),
        "tta": tta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **build_sections(run.heads, run.thresholds, samples, probs, targets),
    }
    report = json_ready(report)
    write_json(out_dir / REPORT_JSON, report)
    write_text(out_dir / REPORT_HTML, render_html(report, read_history(run_dir)))
    return report


def tune_run_thresholds(
    run_dir: str | Path, progress: bool = True, device: str = "auto"
) -> dict[str, list[float]]:
    """Tune every multilabel head's thresholds on the run's validation split and store them.

    Each head uses its config's ``threshold_by`` and ``threshold_target``. The ``thresholds``
    field of ``pictag.json`` is rewritten atomically; everything else in the file is kept.

    Returns:
        Head name -> tuned thresholds (empty without multilabel heads). Without validation
        images the stored thresholds are returned unchanged.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, resolve_device(device))
    tuned_heads = {name: head for name, head in run.heads.items() if head.kind == "multilabel"}
    if not tuned_heads:
        return {}
    samples, _ = eval_samples(run, run_dir, None, "val", progress)
    if not samples:
        log.warning("no validation images: multilabel thresholds are left as they are")
        return {name: run.thresholds.get(name, []) for name in tuned_heads}
    probs, targets = _infer(run, samples, False, progress)
    tuned = {}
    for name in tuned_heads:
        options = run.config.heads.get(name, HeadConfig(kind="multilabel"))
        tuned[name] = tune_thresholds(
            probs[name], targets[name], options.threshold_by, options.threshold_target
        )
    meta_path = run_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["thresholds"] = {**meta.get("thresholds", {}), **tuned}
    write_json(meta_path, meta)
    return tuned


def build_sections(
    heads: dict[str, Head],
    thresholds: dict[str, list[float]],
    samples: list[Sample],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The ``heads``, ``all_heads_correct`` (several heads) and ``mistakes`` of a report."""
    cut = {name: thresholds.get(name) for name, h in heads.items() if h.kind == "multilabel"}
    sections = {
        name: head_report(head.kind, probs[name], targets[name], list(head.labels), cut.get(name))
        for name, head in heads.items()
    }
    result: dict[str, Any] = {"heads": sections}
    if len(heads) > 1:
        kinds = {name: head.kind for name, head in heads.items()}
        known = {name: value for name, value in cut.items() if value is not None}
        result["all_heads_correct"] = all_heads_correct(kinds, probs, targets, known)
    result["mistakes"] = worst_mistakes(heads, cut, samples, probs, targets)
    return result


def worst_mistakes(
    heads: dict[str, Head],
    thresholds: dict[str, list[float] | None],
    samples: list[Sample],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    limit: int = MAX_MISTAKES,
) -> list[dict[str, Any]]:
    """Images with a wrong head, highest loss (lowest probability of the truth) first.

    The loss of an image is the sum over heads of the cross-entropy of the true class
    (multiclass) or the mean binary cross-entropy over the known entries (multilabel).
    """
    loss, wrong = np.zeros(len(samples)), np.zeros(len(samples), dtype=bool)
    for name, head in heads.items():
        cut = thresholds.get(name)
        head_loss, head_wrong = _loss_and_wrong(head.kind, probs[name], targets[name], cut)
        loss += head_loss
        wrong |= head_wrong
    order = [i for i in np.argsort(-loss, kind="stable") if wrong[i]][:limit]
    return [_mistake(i, heads, thresholds, samples, probs, targets, loss[i]) for i in order]


def _loss_and_wrong(
    kind: str, probs: np.ndarray, targets: np.ndarray, thresholds: list[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image loss and whether the decision is wrong, for one head."""
    p = np.clip(probs.astype(np.float64), _EPS, 1 - _EPS)
    decided = decisions(kind, probs, thresholds)
    if kind == "multiclass":
        known = targets >= 0
        truth_p = p[np.arange(len(p)), np.clip(targets, 0, None)]
        return np.where(known, -np.log(truth_p), 0.0), known & (decided != targets)
    entries, truth = targets >= 0, targets >= 0.5
    bce = -np.where(truth, np.log(p), np.log(1 - p)) * entries
    loss = bce.sum(axis=1) / np.maximum(entries.sum(axis=1), 1)
    return loss, ((decided != truth) & entries).any(axis=1)


def _mistake(
    row: int,
    heads: dict[str, Head],
    thresholds: dict[str, list[float] | None],
    samples: list[Sample],
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    loss: float,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": str(samples[row].path), "where": samples[row].where}
    entry.update(loss=float(loss), true={}, pred={}, scores={})
    for name, head in heads.items():
        p, target = probs[name][row], targets[name][row]
        decided = decisions(head.kind, p[None, :], thresholds.get(name))[0]
        if head.kind == "multiclass":
            entry["true"][name] = head.labels[target] if target >= 0 else None
            entry["pred"][name] = head.labels[decided]
            entry["scores"][name] = float(p[decided])
        else:
            on = np.flatnonzero(decided)
            known = target >= 0
            truth = [head.labels[i] for i in np.flatnonzero(known & (target >= 0.5))]
            entry["true"][name] = truth if known.any() else None
            entry["pred"][name] = [head.labels[i] for i in on]
            entry["scores"][name] = [float(p[i]) for i in on]
    return entry


def _infer(
    run: LoadedRun, samples: list[Sample], tta: bool, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and targets of ``samples`` under the run's eval preprocessing."""
    pre, train_cfg = run.preprocess, run.config.train
    dataset = ImageDataset(
        samples, run.heads, pre, eval_transform(pre), max_pixels=run.config.data.max_pixels
    )
    device = next(run.model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=train_cfg.batch_size,
        num_workers=train_cfg.workers,
        pin_memory=device.type == "cuda",
    )
    channels_last = train_cfg.channels_last
    if channels_last:
        run.model.to(memory_format=torch.channels_last)
    logits, targets = predict_logits(run.model, loader, device, tta, channels_last, progress)
    kinds = {name: head.kind for name, head in run.heads.items()}
    return probabilities(kinds, logits), targets


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of the run's ``metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


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
    """A few key metrics per head, as plain text for the terminal."""
    tta = " with TTA" if report.get("tta") else ""
    title = f"{report['run']}: {report['split']} split, {report['n_images']} images{tta}"
    rows = [["head", "kind", "n", "metrics"]]
    for name, section in report["heads"].items():
        keys = SUMMARY_METRICS.get(section["kind"], ())
        values = section.get("metrics", {})
        shown = "  ".join(f"{key} {_number(values.get(key))}" for key in keys if key in values)
        rows.append([name, section["kind"], str(section.get("n", "")), shown])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]
    lines.insert(0, title)
    if "all_heads_correct" in report:
        lines.append(f"all heads correct: {_number(report['all_heads_correct'])}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"
