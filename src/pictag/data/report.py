"""What the data check found: the report object, as text people read and as ``skipped.csv``.

The text report says what was read (images, sizes, label counts per head), then every problem
grouped by kind with its row and fix, then one verdict line. Plain text: it goes to terminals,
log files and exception messages alike.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pictag.data.problems import Problem
from pictag.data.schema import Head, Sample

if TYPE_CHECKING:
    from pictag.data.near_duplicates import NearDuplicate
    from pictag.data.sources import SourceResult

# Errors about a whole head or the whole data set: dropping rows cannot fix them, so they stop
# even a `skip` run.
GLOBAL_KINDS = frozenset({"bad_head", "single_class", "no_samples"})
SKIPPED_COLUMNS = ("where", "path", "kind", "message", "fix")
EXAMPLES = 3  # rows named per finding
_TOP, _BOTTOM = 10, 5  # labels shown first and last when a head has many


@dataclass
class Findings:
    """The problems found so far, in order, and those attached to each sample index."""

    problems: list[Problem] = field(default_factory=list)
    by_sample: dict[int, list[Problem]] = field(default_factory=lambda: defaultdict(list))

    def add(self, problem: Problem, index: int | None = None) -> None:
        """Record a problem, and attach it to sample ``index`` when given (its errors drop it)."""
        self.problems.append(problem)
        if index is not None:
            self.by_sample[index].append(problem)


def sample_where(sample: Sample) -> str:
    """Where a sample came from, for messages: its row (``labels.csv:12``), else its path."""
    return sample.where or str(sample.path)


@dataclass
class CheckReport:
    """What `check_data` found.

    Attributes:
        source: The samples and heads that were checked.
        heads: Heads resolved from all samples' raw labels and the head options.
        problems: The source's own problems, then the checks', in the order found.
        image_sizes: (width, height) of every distinct file that decoded.
        label_counts: Head -> label -> number of samples with it.
        missing_counts: Head -> number of samples without a label for it.
        decoded: Whether the image files were decoded (``False``: only their existence checked).
        by_sample: Sample index -> the problems about that sample.
        near_duplicates: Pairs of files that show (nearly) the same picture, byte-identical
            copies included (``identical``), for the check of copies split across train/test
            (`pictag.data.leakage.find_leaks`).
    """

    source: SourceResult
    heads: dict[str, Head]
    problems: list[Problem]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_counts: dict[str, int] = field(default_factory=dict)
    decoded: bool = True
    by_sample: dict[int, list[Problem]] = field(default_factory=dict, repr=False)
    near_duplicates: list[NearDuplicate] = field(default_factory=list, repr=False)

    def errors(self) -> list[Problem]:
        """Problems that stop a strict run and drop their row under skip."""
        return [p for p in self.problems if p.severity == "error"]

    def warnings(self) -> list[Problem]:
        """Problems that are only reported."""
        return [p for p in self.problems if p.severity != "error"]

    def kept(self) -> list[Sample]:
        """The samples with no error attached, in source order."""
        return [s for i, s in enumerate(self.source.samples) if not self._errors_of(i)]

    def dropped(self) -> list[tuple[Sample, list[Problem]]]:
        """The samples with an error attached, each with its errors."""
        pairs = ((s, self._errors_of(i)) for i, s in enumerate(self.source.samples))
        return [(s, errors) for s, errors in pairs if errors]

    def unread_errors(self) -> list[Problem]:
        """Errors of rows that gave no sample (a missing or unreadable file, a bad cell): they
        are dropped too, though no sample stands for them."""
        attached = {id(p) for problems in self.by_sample.values() for p in problems}
        return [p for p in self.errors() if id(p) not in attached and p.kind not in GLOBAL_KINDS]

    def global_errors(self) -> list[Problem]:
        """Errors about a head or the whole data set, which dropping rows cannot fix."""
        return [p for p in self.errors() if p.kind in GLOBAL_KINDS]

    def _errors_of(self, index: int) -> list[Problem]:
        return [p for p in self.by_sample.get(index, ()) if p.severity == "error"]


def format_report(report: CheckReport, max_per_kind: int = 10) -> str:
    """A readable summary of the data and of every kind of problem found.

    Args:
        report: What `check_data` found.
        max_per_kind: Problems listed per kind; the rest are counted.
    """
    lines = [f"Data: {report.source.description or report.source.format}"]
    lines += _images(report)
    lines += _heads(report)
    lines += _problems(report.problems, max_per_kind)
    lines.append(verdict(report.problems))
    return "\n".join(lines)


def verdict(problems: list[Problem]) -> str:
    """``OK: no problems`` or ``N errors, M warnings``."""
    if not problems:
        return "OK: no problems"
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def write_skipped(report: CheckReport, path: Path) -> int:
    """Write one row per error of each dropped sample (and per row the reader dropped) to a CSV
    with columns where, path, kind, message, fix.

    Returns:
        The number of rows written.
    """
    rows = []
    listed: set[int] = set()
    for sample, problems in report.dropped():
        for problem in problems:
            listed.add(id(problem))
            rows.append(_csv_row(problem, sample.path))
    for problem in report.errors():
        # The reader's errors about rows it could not turn into samples: dropped too.
        if id(problem) not in listed and problem.kind not in GLOBAL_KINDS:
            rows.append(_csv_row(problem, problem.path))
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=SKIPPED_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _csv_row(problem: Problem, path: Path | None) -> dict[str, str]:
    values = (problem.where, "" if path is None else str(path), problem.kind)
    return dict(zip(SKIPPED_COLUMNS, (*values, problem.message, problem.fix), strict=True))


def _images(report: CheckReport) -> list[str]:
    samples = report.source.samples
    files = len({s.path for s in samples})
    bad = len(report.dropped())
    lines = [f"Images: {len(samples)} rows, {files} distinct files, {bad} rows with errors"]
    splits = Counter(s.split or "unsplit" for s in samples)
    if set(splits) != {"unsplit"}:
        bad_splits = Counter(s.split or "unsplit" for s, _ in report.dropped())
        parts = [
            f"{k} {n}" + (f" ({bad_splits[k]} with errors)" if bad_splits[k] else "")
            for k, n in sorted(splits.items())
        ]
        lines.append("  splits: " + ", ".join(parts))
    lines.append("  " + _sizes(report.image_sizes, report.decoded))
    return lines


def _sizes(sizes: list[tuple[int, int]], decoded: bool) -> str:
    if not decoded:
        return "sizes: not checked (files were not decoded)"
    if not sizes:
        return "sizes: no image could be read"
    widths = sorted(w for w, _ in sizes)
    heights = sorted(h for _, h in sizes)
    small = min(sizes, key=lambda s: s[0] * s[1])
    large = max(sizes, key=lambda s: s[0] * s[1])
    median = f"{widths[len(widths) // 2]}x{heights[len(heights) // 2]}"
    return (
        f"sizes: smallest {small[0]}x{small[1]}, largest {large[0]}x{large[1]}, "
        f"median {median}; width {widths[0]}-{widths[-1]}, height {heights[0]}-{heights[-1]}"
    )


def _heads(report: CheckReport) -> list[str]:
    lines = ["Heads:"] if report.source.heads else ["Heads: none"]
    for name, config in report.source.heads.items():
        head = report.heads.get(name)
        if head is None:
            lines.append(f"  {name}: {config.kind}, could not be resolved (see problems)")
            continue
        missing = report.missing_counts.get(name, 0)
        lines.append(
            f"  {name}: {head.kind}, {_plural(head.num_labels, 'label')}, {missing} missing"
        )
        lines += _label_counts(report.label_counts.get(name, {}))
    return lines


def _label_counts(counts: dict[str, int]) -> list[str]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) > _TOP + _BOTTOM + 1:
        hidden = len(ranked) - _TOP - _BOTTOM
        shown = [*ranked[:_TOP], (f"... {hidden} more labels ...", None), *ranked[-_BOTTOM:]]
    else:
        shown = ranked
    width = max((len(label) for label, n in shown if n is not None), default=0)
    return [f"    {label}" if n is None else f"    {label:<{width}}  {n:>6}" for label, n in shown]


def _problems(problems: list[Problem], max_per_kind: int) -> list[str]:
    if not problems:
        return []
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.severity, problem.kind), []).append(problem)
    # Errors first, then the largest groups.
    order = sorted(groups, key=lambda key: (key[0] != "error", -len(groups[key]), key[1]))
    lines = ["Problems:"]
    for severity, kind in order:
        group = groups[(severity, kind)]
        lines.append(f"  {kind}: {_plural(len(group), severity)}")
        lines += [f"    {p}" for p in group[:max_per_kind]]
        if len(group) > max_per_kind:
            lines.append(f"    ... and {len(group) - max_per_kind} more")
    return lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
