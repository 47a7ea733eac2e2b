"""`pictag check-data`: find everything wrong with the data before training, row by row.

One run lists every problem -- unusable image files, unknown labels, rows with no labels,
duplicates with conflicting labels, labels too rare to split, a tag separator that looks wrong --
each naming its row (``labels.csv:12``) and a fix, instead of training dying at the first bad file
an hour in. The ``strict`` policy stops on any error; ``skip`` drops the rows with errors and lists
them in ``skipped.csv``. Decoding runs in threads: 12,000 small images take seconds on two cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pictag.config import DataConfig, HeadConfig
from pictag.data.images import ImageError, probe_image
from pictag.data.problems import Problem
from pictag.data.report import CheckReport, format_report, write_skipped
from pictag.data.schema import Head, LabelError, RawLabel, Sample, resolve_head

if TYPE_CHECKING:
    from pictag.data.sources import SourceResult

__all__ = ["CheckReport", "DataCheckError", "apply_policy", "check_data", "format_report"]

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.csv"
_IMAGE_KINDS = {"missing": "missing_file", "too_large": "too_large"}  # other reasons: unreadable
_HASH_BLOCK = 1 << 20
_SEPARATORS = (",", ";", "|")
_SHARE = 0.2  # share of values holding a separator character that makes a head look mis-split
_EXAMPLES = 3  # rows named per finding


class DataCheckError(RuntimeError):
    """The checks found errors under the ``strict`` policy; str() is the full report."""


@dataclass
class _Findings:
    problems: list[Problem] = field(default_factory=list)
    by_sample: dict[int, list[Problem]] = field(default_factory=lambda: defaultdict(list))

    def add(self, problem: Problem, index: int | None = None) -> None:
        self.problems.append(problem)
        if index is not None:
            self.by_sample[index].append(problem)


@dataclass(frozen=True)
class _FileInfo:
    size: tuple[int, int] | None = None
    digest: bytes | None = None
    error: ImageError | None = None


@dataclass
class _Labels:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    rows: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    keys: list[list[Hashable]] = field(default_factory=list)  # per sample, compared for duplicates


def check_data(
    source: SourceResult,
    data: DataConfig,
    *,
    decode: bool = True,
    workers: int = 4,
    progress: bool = True,
) -> CheckReport:
    """Check every image file and label of a source, and report all problems found.

    Args:
        source: Samples and head options, as a reader returned them.
        data: Data options; ``max_pixels`` and ``min_per_label`` are used here.
        decode: Decode (and hash) every image; without it only the files' existence is checked.
        workers: Threads that decode images (Pillow releases the GIL while decoding).
        progress: Show a progress bar while decoding.
    """
    samples = source.samples
    found = _Findings()
    _attach_source_problems(source, found)
    if not samples:
        fix = "check data.images, data.labels and data.format"
        where = source.description or "data"
        found.add(Problem("no_samples", where, "no labelled images were found", fix))
    keys = [os.path.normcase(os.path.abspath(s.path)) for s in samples]
    files = _inspect_files(samples, keys, data.max_pixels, decode, workers, progress)
    _report_files(samples, keys, files, found)
    heads = _resolve_heads(source, found) if samples else {}
    labels = _encode_all(samples, heads, found)
    _check_unlabelled(samples, source.heads, found)
    _check_duplicates(samples, keys, files, labels, found)
    _check_rare(samples, heads, labels, data.min_per_label, found)
    _check_separators(samples, source.heads, found)
    sizes = [info.size for info in files.values() if info.size is not None]
    by_sample = dict(found.by_sample)
    return CheckReport(
        source, heads, found.problems, sizes, labels.counts, labels.missing, decode, by_sample
    )


def apply_policy(report: CheckReport, policy: str, out_dir: Path | None = None) -> list[Sample]:
    """Stop on errors (``strict``) or drop the rows with errors (``skip``).

    Args:
        report: What `check_data` found.
        policy: ``strict`` or ``skip``.
        out_dir: Where ``skip`` writes ``skipped.csv`` (default: the current folder).

    Returns:
        The samples to train on.

    Raises:
        DataCheckError: ``strict`` and any error; under ``skip``, errors that dropping rows
            cannot fix (a head with one class, no samples at all) or no samples left.
    """
    if policy not in ("strict", "skip"):
        raise ValueError(f"data.policy must be 'strict' or 'skip', got {policy!r}")
    if report.errors() and (policy == "strict" or report.global_errors()):
        raise DataCheckError(format_report(report))
    kept = report.kept()
    if report.errors():
        path = Path.cwd() / SKIPPED_FILE if out_dir is None else Path(out_dir) / SKIPPED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_skipped(report, path)
        total = len(report.source.samples)
        log.warning(
            "dropped %d of %d samples with errors; list: %s", total - len(kept), total, path
        )
    if not kept:
        raise DataCheckError(format_report(report) + "\nNo samples are left after skipping.")
    return kept


def _attach_source_problems(source: SourceResult, found: _Findings) -> None:
    """Keep the reader's problems, attached to the sample of the same row when there is one."""
    rows: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(source.samples):
        if sample.where:
            rows[sample.where].append(index)
    for problem in source.problems:
        found.add(problem)
        for index in rows.get(problem.where, ()):
            found.by_sample[index].append(problem)


def _inspect_files(
    samples: Sequence[Sample],
    keys: Sequence[str],
    max_pixels: int,
    decode: bool,
    workers: int,
    progress: bool,
) -> dict[str, _FileInfo]:
    paths = {key: sample.path for key, sample in zip(keys, samples, strict=True)}
    if not decode:
        return {key: _exists(path) for key, path in paths.items()}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(partial(_inspect, max_pixels=max_pixels), paths.values())
        bar = tqdm(results, total=len(paths), desc="check images", disable=not progress)
        return dict(zip(paths, bar, strict=True))


def _exists(path: Path) -> _FileInfo:
    if os.path.isfile(path):
        return _FileInfo()
    message = f"{path} does not exist; fix the path or remove the row"
    return _FileInfo(error=ImageError(message, str(path), "missing"))


def _inspect(path: Path, max_pixels: int) -> _FileInfo:
    try:
        size = probe_image(path, max_pixels)
    except ImageError as err:
        return _FileInfo(error=err)
    except Exception as err:  # one file crashing Pillow must not stop the check of 12,000
        message = f"{path} could not be decoded ({type(err).__name__}: {err}); re-save it"
        return _FileInfo(error=ImageError(message, str(path), "unreadable"))
    hasher = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as file:
            while block := file.read(_HASH_BLOCK):
                hasher.update(block)
    except OSError:  # vanished since the probe: its size is still worth reporting
        return _FileInfo(size=size)
    return _FileInfo(size=size, digest=hasher.digest())


def _report_files(
    samples: Sequence[Sample], keys: Sequence[str], files: dict[str, _FileInfo], found: _Findings
) -> None:
    for index, (sample, key) in enumerate(zip(samples, keys, strict=True)):
        error = files[key].error
        if error is None:
            continue
        # ImageError messages read "<file> is <what>; <fix>": keep the two parts apart.
        message, sep, fix = str(error).rpartition("; ")
        if not sep:
            message, fix = str(error), "fix or re-save the file, or remove the row"
        kind = _IMAGE_KINDS.get(error.reason, "unreadable")
        found.add(Problem(kind, _where(sample), message, fix, path=sample.path), index)


def _resolve_heads(source: SourceResult, found: _Findings) -> dict[str, Head]:
    heads = {}
    for name, config in source.heads.items():
        raws = [s.labels.get(name) for s in source.samples]
        try:
            heads[name] = _resolve(name, config, raws)
        except ValueError as err:  # options that do not fit, or a head with no labels at all
            fix = f"fix heads.{name} in the config, or the labels it reads"
            found.add(Problem("bad_head", f"heads.{name}", str(err), fix))
    return heads


def _resolve(name: str, config: HeadConfig, raws: list[RawLabel]) -> Head:
    options = {"labels": config.labels, "rename": config.rename, "bins": config.bins}
    return resolve_head(
        name,
        config.kind,
        raws,
        **options,
        min_count=config.min_count,
        other_label=config.other_label,
    )


def _encode_all(samples: Sequence[Sample], heads: dict[str, Head], found: _Findings) -> _Labels:
    """Encode every label, reporting unknown ones, and count the labels of each head."""
    result = _Labels(keys=[[] for _ in samples])
    fix = "correct this row's label, or remove the row"
    for name, head in heads.items():
        # Few distinct raw values repeat over many rows, and Head.encode rebuilds its index per
        # call: encode each distinct value once.
        cache: dict[Hashable, int | tuple[int, ...] | LabelError | None] = {}
        tally: Counter[int] = Counter()
        result.missing[name] = 0
        for index, sample in enumerate(samples):
            raw = sample.labels.get(name)
            raw_key = tuple(raw) if isinstance(raw, list) else raw
            if raw_key not in cache:
                cache[raw_key] = _encode(head, raw)
            value = cache[raw_key]
            if isinstance(value, LabelError):
                where = _where(sample)
                found.add(Problem("unknown_label", where, str(value), fix, path=sample.path), index)
                value = ("?", raw_key)  # still compared as itself for duplicates
            elif value is None:
                result.missing[name] += 1
            else:
                for label in (value,) if isinstance(value, int) else value:
                    tally[label] += 1
                    if len(result.rows[name, head.labels[label]]) < _EXAMPLES:
                        result.rows[name, head.labels[label]].append(index)
            result.keys[index].append(value)
        result.counts[name] = {label: tally[i] for i, label in enumerate(head.labels)}
    return result


def _encode(head: Head, raw: RawLabel) -> int | tuple[int, ...] | LabelError | None:
    try:
        return head.encode(raw)
    except LabelError as err:
        return err


def _check_duplicates(
    samples: Sequence[Sample],
    keys: Sequence[str],
    files: dict[str, _FileInfo],
    labels: _Labels,
    found: _Findings,
) -> None:
    """Report one image (the same path, or the same bytes) listed in several rows."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[files[key].digest or key].append(index)  # same path implies same digest
    for members in (m for m in groups.values() if len(m) > 1):
        conflict = len({tuple(labels.keys[i]) for i in members}) > 1
        for i in members:
            sample = samples[i]
            if conflict:
                others = [j for j in members if j != i]
                theirs = "; ".join(_describe(samples, keys, i, j) for j in others[:_EXAMPLES])
                more = f" and {len(others) - _EXAMPLES} more" if len(others) > _EXAMPLES else ""
                message = (
                    f"{sample.path.name} is labelled {_labels_text(sample)} here, but the same "
                    f"image is labelled {theirs}{more}"
                )
                fix = "decide which labels are right; keep one row for the image, remove the rest"
                problem = Problem(
                    "conflicting_duplicate", _where(sample), message, fix, path=sample.path
                )
                found.add(problem, i)
            elif i != members[0]:
                first = _describe(samples, keys, i, members[0], labels=False)
                message = f"{sample.path.name} is the same image as {first}, with the same labels"
                fix = "remove the extra copy: one image in both train and test inflates scores"
                found.add(
                    Problem("duplicate_image", _where(sample), message, fix, "warning", sample.path)
                )


def _describe(
    samples: Sequence[Sample], keys: Sequence[str], index: int, other: int, labels: bool = True
) -> str:
    """``<labels> at <row>``, adding the other file when the two rows share bytes, not a path."""
    text = f"{_labels_text(samples[other])} at " if labels else ""
    text += _where(samples[other])
    return text + ("" if keys[index] == keys[other] else f" (same bytes: {samples[other].path})")


def _labels_text(sample: Sample) -> str:
    def show(raw: RawLabel) -> str:
        if isinstance(raw, (tuple, list)):
            return "[" + ", ".join(map(str, raw)) + "]"
        return "-" if raw is None else str(raw)

    return ", ".join(f"{name}={show(raw)}" for name, raw in sample.labels.items()) or "nothing"


def _where(sample: Sample) -> str:
    return sample.where or str(sample.path)


def _check_unlabelled(
    samples: Sequence[Sample], configs: dict[str, HeadConfig], found: _Findings
) -> None:
    """A row with no label for any head teaches nothing; one with only empty tag lists may."""
    for index, sample in enumerate(samples):
        states = {_state(sample.labels.get(n), c.kind) for n, c in configs.items()}
        if not configs or "labelled" in states:
            continue
        if "empty" in states:
            message = f"{sample.path.name} has no tags; fine only if it truly shows none of them"
            fix = "add the tags it shows, or keep it as an image with none"
            found.add(Problem("no_labels", _where(sample), message, fix, "warning", sample.path))
        else:
            message = f"{sample.path.name} has no label for any head ({', '.join(configs)})"
            fix = "fill in its labels, or remove the row"
            found.add(Problem("no_labels", _where(sample), message, fix, path=sample.path), index)


def _state(raw: RawLabel, kind: str) -> str:
    if raw is None:
        return "missing"
    if len(raw) if isinstance(raw, (tuple, list)) else str(raw).strip():
        return "labelled"
    return "empty" if kind == "multilabel" else "missing"


def _check_rare(
    samples: Sequence[Sample],
    heads: dict[str, Head],
    labels: _Labels,
    least: int,
    found: _Findings,
) -> None:
    for name, head in heads.items():
        if head.kind == "multiclass" and head.num_labels < 2:
            message = (
                f"head {name!r} has a single class ({head.labels[0]!r}): nothing to tell apart"
            )
            fix = f"add images of other classes, or make it heads.{name}.kind: multilabel"
            found.add(Problem("single_class", f"heads.{name}", message, fix))
            continue
        for label, count in labels.counts[name].items():
            if count >= least:
                continue
            rows = [samples[i] for i in labels.rows[name, label]]
            where = ", ".join(_where(s) for s in rows) + (", ..." if count > len(rows) else "")
            message = (
                f"head {name!r}: label {label!r} has {count} image{'s' * (count != 1)}, fewer "
                f"than data.min_per_label={least}, too few to split into train and validation"
            )
            fold = f"fold rare classes with heads.{name}.min_count: {least}, "
            fix = (
                f"add images of it, {fold if head.kind == 'multiclass' else ''}or merge it into "
                f"another label with heads.{name}.rename: {{{label}: OTHER}}"
            )
            path = rows[0].path if count == 1 else None
            found.add(
                Problem("rare_label", where or f"heads.{name}", message, fix, "warning", path)
            )


def _check_separators(
    samples: Sequence[Sample], configs: dict[str, HeadConfig], found: _Findings
) -> None:
    """Warn when values look split wrongly: tag lists in a multiclass head, or a multilabel
    separator that never splits anything while another character would."""
    for name, config in configs.items():
        values = [(s, s.labels.get(name)) for s in samples if s.labels.get(name) is not None]
        if config.kind == "multiclass":
            texts = [(s, v.strip()) for s, v in values if isinstance(v, str) and v.strip()]
            chars: Sequence[str] = _SEPARATORS
            advice = f"heads.{name}.kind: multilabel and heads.{name}.separator: SEP"
            what = "they look like tag lists, but the head is multiclass"
        elif config.separator is not None:
            tags = [(s, (v,) if isinstance(v, str) else tuple(v)) for s, v in values]
            if any(len(t) > 1 for _, t in tags):
                continue  # the separator does split values: it is right
            texts = [(s, t[0]) for s, t in tags if t]
            chars = [c for c in (*_SEPARATORS, " ") if c != config.separator]
            advice = f"heads.{name}.separator: SEP"
            what = f"yet no value splits into several tags on {config.separator!r}"
        else:
            continue
        hits = [(s, t) for s, t in texts if any(c in t for c in chars)]
        if len(hits) < 2 or len(hits) < _SHARE * len(texts):
            continue
        sep = Counter(c for _, t in hits for c in chars if c in t).most_common(1)[0][0]
        sample, example = next((s, t) for s, t in hits if sep in t)
        message = (
            f"head {name!r}: {len(hits)} of {len(texts)} values contain {sep!r} "
            f"(e.g. {example!r} here); {what}"
        )
        fix = "if an image can have several of these, set " + advice.replace("SEP", repr(sep))
        found.add(Problem("separator", _where(sample), message, fix, "warning", sample.path))
