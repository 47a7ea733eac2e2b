"""What a model card says, gathered from a run folder (:mod:`pictag.export.model_card` writes it).

Only what the folder holds is used, read through :mod:`pictag.run`: ``pictag.json``,
``splits.csv``, and when present ``report.json`` (``pictag evaluate``) and ``audit.json``
(``pictag audit``); a missing file is not an error, the card says what to run.

``report.json`` keeps no per-image outputs, so for an evaluated run the test split is predicted
again with the loaded model (no TTA: the exported model has none) to bootstrap each head's
primary metric; the data source's labels (no images decoded) give the label counts per split.
The data is touched only then: an export must work from a run folder copied without its data,
and an evaluated run's data was readable. If it no longer is, the card keeps the report's
numbers and says why it has no intervals.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pictag.data.schema import Head, LabelError, Sample
from pictag.data.sources import read_samples
from pictag.data.split_file import splits_of
from pictag.evaluation.evaluate import REPORT_JSON
from pictag.evaluation.run_extras import audit_summary
from pictag.evaluation.run_inference import infer
from pictag.evaluation.samples import eval_samples
from pictag.export.bootstrap import Interval, metric_interval
from pictag.heads import get_kind
from pictag.models.onnx_export import first_line
from pictag.run import AUDIT_JSON, LoadedRun, read_splits

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """The test split predicted again at export time.

    Attributes:
        split: The split used (``test``, or ``val`` for a run without test images).
        n_images: Images evaluated.
        sections: Head name -> the kind's report section (metrics at the run's decisions).
        intervals: Head name -> bootstrap interval of the kind's primary metric (None: undefined).
    """

    split: str
    n_images: int
    sections: dict[str, dict[str, Any]]
    intervals: dict[str, Interval | None]


@dataclass
class CardFacts:
    """Everything the card states about a run.

    Attributes:
        run_dir: The run folder.
        run: The loaded run (config, heads, decisions, preprocessing, ``pictag.json``).
        split_sizes: Split name -> images in ``splits.csv`` (None: the file is missing).
        report: ``report.json`` (None: not evaluated).
        evaluation: The test split predicted again (None: not evaluated, or see ``why_not``).
        why_not: Why an evaluated run has no ``evaluation`` ('' otherwise).
        label_counts: Head -> split -> images per label (positives, for tags); empty when the
            data was not read (see ``counts_note``).
        counts_note: Why ``label_counts`` is empty.
        audit: ``audit.json`` (None: not audited).
        audit_counts: The audit's counts (see :func:`pictag.evaluation.run_extras.audit_summary`).
    """

    run_dir: Path
    run: LoadedRun
    split_sizes: dict[str, int] | None
    report: dict[str, Any] | None
    evaluation: Evaluation | None = None
    why_not: str = ""
    label_counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    counts_note: str = ""
    audit: dict[str, Any] | None = None
    audit_counts: dict[str, Any] | None = None


def gather_facts(run_dir: Path, run: LoadedRun) -> CardFacts:
    """Read what the card needs from ``run_dir``; predict the test split again when evaluated.

    Raises:
        ValueError: ``report.json`` or ``audit.json`` is there but cannot be read; the message
            says to re-run the command that wrote it (a card built around it would be wrong).
    """
    facts = CardFacts(
        run_dir, run, _split_sizes(run_dir), _read_optional(run_dir, REPORT_JSON, "evaluate")
    )
    facts.audit = _read_optional(run_dir, AUDIT_JSON, "audit")
    if facts.audit is not None:
        facts.audit_counts = audit_summary(run_dir, run_dir)
    if facts.report is None:
        facts.counts_note = "they are read from the data only once the run is evaluated"
        return facts
    try:
        samples, split = eval_samples(run, run_dir, None, "test", progress=False)
        why_not = "" if samples else f"none of the run's {split} images can be read here"
    except (OSError, ValueError) as err:  # a run folder copied without its data
        why_not = f"the run's data cannot be read here ({first_line(err)})"
    if why_not:
        facts.why_not = facts.counts_note = why_not
        return facts
    facts.label_counts = _label_counts(run, run_dir)
    log.info("model card: predicting the %d %s images again for intervals", len(samples), split)
    facts.evaluation = _evaluate(run, samples, split)
    return facts


def _split_sizes(run_dir: Path) -> dict[str, int] | None:
    try:
        return {name: len(paths) for name, paths in read_splits(run_dir).items()}
    except FileNotFoundError:
        return None


def _read_optional(run_dir: Path, name: str, command: str) -> dict[str, Any] | None:
    """A JSON object that ``pictag COMMAND`` wrote, or None when the file is not there."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        problem = "" if isinstance(document, dict) else "it holds no JSON object"
    except (OSError, ValueError) as err:
        document, problem = None, first_line(err)
    if problem:
        raise ValueError(
            f"{path} cannot be read ({problem}), so the model card cannot describe it: run "
            f"`pictag {command} {run_dir}` again, or delete the file"
        )
    return document


def _evaluate(run: LoadedRun, samples: list[Sample], split: str) -> Evaluation:
    """Each head's report section and primary-metric interval on ``samples``."""
    # As `pictag evaluate` computes them, without TTA (which the exported model lacks).
    probs, targets = infer(run, samples)
    sections, intervals = {}, {}
    for name, head in run.heads.items():
        kind, params = get_kind(head.kind), run.params[name]
        sections[name] = kind.section(probs[name], targets[name], list(head.labels), params)
        intervals[name] = metric_interval(kind, probs[name], targets[name], params)
    return Evaluation(split, len(samples), sections, intervals)


def _label_counts(run: LoadedRun, run_dir: Path) -> dict[str, dict[str, list[int]]]:
    """Head -> split -> images per label, from the source's labels and ``splits.csv``."""
    source = read_samples(run.config.data, run.config.heads)
    listed = {path: name for name, paths in read_splits(run_dir).items() for path in paths}
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for sample, split in zip(source.samples, splits_of(source.samples, listed), strict=True):
        if split is not None:
            by_split[split].append(sample)
    return {
        name: {split: _counts(head, by_split.get(split, [])) for split in ("train", "val", "test")}
        for name, head in run.heads.items()
    }


def _counts(head: Head, samples: list[Sample]) -> list[int]:
    kind = get_kind(head.kind)
    if not samples:
        return [0] * head.num_labels
    targets = np.stack([kind.to_target(_encoded(head, s), head.num_labels) for s in samples])
    return [int(c) for c in kind.count_labels(targets, head.num_labels)]


def _encoded(head: Head, sample: Sample) -> Any:
    """The sample's encoded label; a label the model does not know counts as missing (the
    evaluation leaves such images out as well)."""
    try:
        return head.encode(sample.labels.get(head.name))
    except LabelError:
        return None
