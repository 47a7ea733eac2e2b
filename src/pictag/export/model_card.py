"""The model card: a Markdown page on what an exported model is, what it knows and how well it
does, written beside every export (``model.onnx`` -> ``model.card.md``) and stored in the ONNX
file's metadata under ``pictag.model_card``.

    card = build_model_card(run_dir, load_run(run_dir))

Sections: Model (backbone, weights, input and preprocessing, training, versions), Data (source,
images per split), one per head (kind, decision rule and its parameters, and per label: its
threshold, images per split, test precision and recall), Test metrics (each head's metrics,
its primary one with a 95 % bootstrap interval), Audit and Known limits. Everything comes from
the run folder (:mod:`pictag.export.card_facts`); what is missing is named with the command that
writes it, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pictag.config import HeadConfig
from pictag.export.bootstrap import Interval
from pictag.export.card_caveats import audit_section, limits_section
from pictag.export.card_facts import CardFacts, gather_facts
from pictag.export.markdown import number, table
from pictag.heads import get_kind
from pictag.run import LoadedRun
from pictag.version import __version__

CARD_SUFFIX = ".card.md"
SPLITS = ("train", "val", "test")
METRIC_COLUMNS = ("head", "metric", "value", "95 % interval")
PER_LABEL = "in each head's table, per split (for tags: the images that have the tag)"


def card_path(model_path: str | Path) -> Path:
    """Where the card of an exported file goes: ``model.onnx`` -> ``model.card.md``."""
    path = Path(model_path)
    return path.with_name(path.stem + CARD_SUFFIX)


def build_model_card(run_dir: str | Path, run: LoadedRun, date: str | None = None) -> str:
    """The Markdown card of a run.

    For an evaluated run (``report.json``) this predicts the test split again, to bootstrap
    intervals (see :mod:`pictag.export.card_facts`).

    Args:
        run_dir: The run folder.
        run: The run, loaded (its model predicts the test split).
        date: The export date shown (ISO); default today in UTC.

    Raises:
        ValueError: ``report.json`` or ``audit.json`` cannot be read.
    """
    facts = gather_facts(Path(run_dir), run)
    date = date or datetime.now(timezone.utc).date().isoformat()
    parts = [_title(facts, date), _model(facts), _data(facts)]
    parts += [_head(facts, name) for name in run.heads]
    parts += [_metrics(facts), audit_section(facts), limits_section(facts)]
    return "\n\n".join(parts) + "\n"


def _title(facts: CardFacts, date: str) -> str:
    return (
        f"# Model card: {facts.run_dir.resolve().name}\n\n"
        f"Exported by pictag {__version__} on {date} from `{facts.run_dir}` (checkpoint "
        f"`{facts.run.checkpoint_id}`). `pictag export` writes this card from the run folder; "
        "the ONNX file holds the same text in its metadata (`pictag.model_card`)."
    )


def _model(facts: CardFacts) -> str:
    run, model, train = facts.run, facts.run.config.model, facts.run.config.train
    pre, saved = run.preprocess, run.meta.get("epoch")
    (h, w), versions = pre.size, run.meta.get("versions", {})
    trained = f"{train.mode}, {train.epochs} epochs configured"
    preprocess = (
        f"resize the shorter side to {pre.base_size} px ({pre.interpolation}, antialiased), "
        f"centre-crop {h} × {w}, scale to [0, 1], subtract mean {_values(pre.mean)}, divide by "
        f"std {_values(pre.std)}"
    )
    rows = [
        ("Backbone", f"`{model.backbone}`, pretrained weights `{model.pretrained}`"),
        ("Input", f"RGB, float32 NCHW `[N, 3, {h}, {w}]`"),
        ("Preprocessing", preprocess),
        ("Training", trained + (f"; the saved model is from epoch {saved}" if saved else "")),
        ("Validation metrics of the saved model", _validation(facts)),
        ("Trained with", ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown"),
    ]
    return "## Model\n\n" + table(("", ""), rows)


def _validation(facts: CardFacts) -> str:
    """Each head's primary metric as training recorded it for the saved epoch."""
    saved = facts.run.meta.get("metrics") or {}
    keys = [f"{name}/{get_kind(h.kind).primary_metric}" for name, h in facts.run.heads.items()]
    return (
        ", ".join(f"{key} {number(saved[key])}" for key in keys if key in saved) or "not recorded"
    )


def _data(facts: CardFacts) -> str:
    data, sizes = facts.run.config.data, facts.split_sizes
    given = {"images": ", ".join(data.images), "labels": data.labels, "split file": data.split_file}
    source = f"format `{data.format}`"
    source += "".join(f", {key} `{value}`" for key, value in given.items() if value)
    split = " · ".join(f"{name} {sizes.get(name, 0):,}" for name in SPLITS) if sizes else ""
    rows = [
        ("Source (as configured)", source),
        ("Images per split", split or "unknown: the run has no `splits.csv`"),
        ("Images per label", f"not shown: {facts.counts_note}" if facts.counts_note else PER_LABEL),
    ]
    return "## Data\n\n" + table(("", ""), rows)


def _head(facts: CardFacts, name: str) -> str:
    """A head's kind, decision rule, operating point and per-label table."""
    head, params = facts.run.heads[name], facts.run.params[name]
    kind = get_kind(head.kind)
    meta = kind.export_meta(head, params)
    answers = "exactly one label per image" if kind.exclusive else "any number of labels per image"
    lines = [f"## Head `{name}`: {head.kind}, {head.num_labels} labels ({answers})", ""]
    lines.append(f"- Decision: {_decision(meta)}.")
    if params:
        lines.append(f"- {_tuning(facts, name)}.")
    section = facts.evaluation.sections[name] if facts.evaluation else {}
    point = (section.get("binary") or {}).get("operating_point")
    if point:  # what the threshold buys and costs
        lines.append(
            f"- At this threshold on the {facts.evaluation.split} split: precision "
            f"{number(point['precision'])}, recall {number(point['recall'])}, false-positive rate "
            f"{number(point['fpr'])}."
        )
    return "\n".join(lines) + "\n\n" + _label_table(facts, name, meta, section)


def _decision(meta: dict[str, Any]) -> str:
    """The rule of :attr:`HeadKind.export_meta` (the keys the ONNX metadata documents)."""
    text = f"{meta['decision']} over {meta['activation']} probabilities"
    if "threshold" in meta:
        text += f": `{meta['positive']}` when its probability is at least "
        text += f"{meta['threshold']:.4f}, else the other class"
    if "thresholds" in meta:
        text += ": each label whose probability reaches its threshold (table)"
    return text


def _tuning(facts: CardFacts, name: str) -> str:
    cfg = facts.run.config.heads.get(name, HeadConfig())
    if cfg.threshold_by == "fixed":
        return f"Threshold fixed at {cfg.threshold_target} (`threshold_by: fixed`), not tuned"
    goal = f" of at least {cfg.threshold_target}" if cfg.threshold_by != "f1" else ""
    n_val = (facts.split_sizes or {}).get("val", 0)
    return f"Tuned on the validation split ({n_val:,} images) for {cfg.threshold_by}{goal}"


def _label_table(facts: CardFacts, name: str, meta: dict[str, Any], section: dict) -> str:
    """Per label: threshold, images per split (positives, for tags), test P/R/F1."""
    header, columns = ["label"], [list(facts.run.heads[name].labels)]
    if "thresholds" in meta:
        header.append("threshold")
        columns.append([f"{t:.4f}" for t in meta["thresholds"]])
    for split, counts in facts.label_counts.get(name, {}).items():
        header.append(f"{split} images")
        columns.append([f"{c:,}" for c in counts])
    rows = section.get("per_label") or []
    for metric in ("precision", "recall", "f1"):
        if rows and metric in rows[0]:
            header.append(f"{facts.evaluation.split} {metric}")
            columns.append([number(row[metric]) for row in rows])
    return table(header, zip(*columns, strict=True))


def _metrics(facts: CardFacts) -> str:
    title, report, evaluation = "## Test metrics\n\n", facts.report, facts.evaluation
    if report is None:
        return title + f"Not evaluated: run `pictag evaluate {facts.run_dir}`, then export again."
    if evaluation is None:  # the report's numbers, without intervals
        intro = (
            f"No intervals: {facts.why_not}. The values are `report.json`'s "
            f"({report.get('split')} split, {report.get('n_images')} images, made "
            f"{report.get('created')})."
        )
        sections, intervals, notes = report.get("heads", {}), {}, []
    else:
        intro = (
            f"The {evaluation.split} split ({evaluation.n_images:,} images), predicted again at "
            "export with the run's decision parameters. Intervals: 95 % percentile bootstrap of "
            "each head's primary metric (the images resampled with replacement, seed 0), each "
            "resample scored by the head kind's own metrics."
        )
        sections, intervals = evaluation.sections, evaluation.intervals
        notes = _report_notes(facts)
    rows = [
        row
        for name in facts.run.heads
        for row in _metric_rows(facts, name, sections.get(name), intervals.get(name))
    ]
    return title + "\n\n".join([intro, table(METRIC_COLUMNS, rows), *notes])


def _metric_rows(
    facts: CardFacts, name: str, section: dict | None, interval: Interval | None
) -> list[tuple]:
    """The kind's summary metrics of one head, the interval beside the primary one."""
    if not section:
        return [(f"`{name}`", "—", "—", "")]
    values = section.get("metrics", {})
    rows = []
    for metric in get_kind(facts.run.heads[name].kind).summary_metrics:
        band = ""
        if interval is not None and metric == interval.metric:
            band = f"{interval.low:.4f} – {interval.high:.4f} ({interval.resamples:,} resamples)"
        rows.append((f"`{name}`", metric, number(values.get(metric)), band))
    return rows


def _report_notes(facts: CardFacts) -> list[str]:
    """Where ``report.json`` disagrees with the card (TTA, re-tuned thresholds, other data)."""
    report, notes = facts.report or {}, []
    for name, head in facts.run.heads.items():
        primary = get_kind(head.kind).primary_metric
        theirs = (report.get("heads", {}).get(name) or {}).get("metrics", {}).get(primary)
        ours = facts.evaluation.sections[name]["metrics"].get(primary)
        if number(theirs) != number(ours):  # as shown: None and nan both read "undefined"
            notes.append(
                f"`report.json` ({report.get('split')} split, {report.get('n_images')} images, "
                f"TTA {'on' if report.get('tta') else 'off'}) gives `{name}` {primary} "
                f"{number(theirs)}, not {number(ours)}: it is out of date or was made otherwise; "
                f"run `pictag evaluate {facts.run_dir}` again to refresh it."
            )
    return notes


def _values(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
