"""`pictag check-data`: find everything wrong with the data before training, row by row.

One run lists every problem -- unusable image files, unknown labels, rows with no labels,
duplicates with conflicting labels, near-duplicate images (warnings), labels too rare to split,
a tag separator that looks wrong -- each naming its row (``labels.csv:12``) and a fix, instead
of training dying at the first bad file an hour in. The ``strict`` policy stops on any error;
``skip`` drops the rows with errors and lists them in ``skipped.csv``. Decoding runs in threads:
12,000 small images take seconds on two cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pictag.config import DataConfig
from pictag.data.images import ImageError, probe_image
from pictag.data.label_checks import (
    LabelCounts,
    check_rare,
    check_separators,
    check_unlabelled,
    encode_labels,
    resolve_heads,
)
from pictag.data.leakage import check_near_duplicates
from pictag.data.near_duplicates import DEFAULT_MAX_DISTANCE, NearDuplicate, probe_and_hash
from pictag.data.problems import Problem
from pictag.data.report import (
    EXAMPLES,
    CheckReport,
    Findings,
    format_report,
    sample_where,
    write_skipped,
)
from pictag.data.schema import RawLabel, Sample

if TYPE_CHECKING:
    from pictag.data.sources import SourceResult

__all__ = ["CheckReport", "DataCheckError", "apply_policy", "check_data", "format_report"]

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.csv"
_IMAGE_KINDS = {"missing": "missing_file", "too_large": "too_large"}  # other reasons: unreadable
_HASH_BLOCK = 1 << 20


class DataCheckError(RuntimeError):
    """The checks found errors under the ``strict`` policy; str() is the full report."""


@dataclass(frozen=True)
class _FileInfo:
    size: tuple[int, int] | None = None
    digest: bytes | None = None
    error: ImageError | None = None
    hashes: tuple[int, int] | None = None  # perceptual hash and mirror hash


def check_data(
    source: SourceResult,
    data: DataConfig,
    *,
    decode: bool = True,
    workers: int = 4,
    progress: bool = True,
    near_duplicates: int | None = DEFAULT_MAX_DISTANCE,
) -> CheckReport:
    """Check every image file and label of a source, and report all problems found.

    Args:
        source: Samples and head options, as a reader returned them.
        data: Data options; ``max_pixels`` and ``min_per_label`` are used here.
        decode: Decode (and hash) every image; without it only the files' existence is checked.
        workers: Threads that decode images (Pillow releases the GIL while decoding).
        progress: Show a progress bar while decoding.
        near_duplicates: Warn about pairs of images whose perceptual hashes are at most this
            many bits (of 64) apart; None skips hashing, which costs 35-100 % more CPU than
            the decode alone (benchmarks/near_duplicates.py).
    """
    samples = source.samples
    found = Findings()
    _attach_source_problems(source, found)
    if not samples:
        fix = "check data.images, data.labels and data.format"
        where = source.description or "data"
        found.add(Problem("no_samples", where, "no labelled images were found", fix))
    keys = [os.path.normcase(os.path.abspath(s.path)) for s in samples]
    bits = near_duplicates if decode else None  # the hashes come from the decode pass
    hashing = bits is not None
    files = _inspect_files(samples, keys, data.max_pixels, decode, hashing, workers, progress)
    _report_files(samples, keys, files, found)
    heads = resolve_heads(source, found) if samples else {}
    labels = encode_labels(samples, heads, found)
    check_unlabelled(samples, source.heads, found)
    _check_duplicates(samples, keys, files, labels, found)
    similar: list[NearDuplicate] = []
    if bits is not None:
        hashes = {key: info.hashes for key, info in files.items() if info.hashes is not None}
        digests = {key: info.digest for key, info in files.items()}
        similar = check_near_duplicates(samples, keys, hashes, digests, found, bits)
    check_rare(samples, heads, labels, data.min_per_label, found)
    check_separators(samples, source.heads, found)
    sizes = [info.size for info in files.values() if info.size is not None]
    by_sample = dict(found.by_sample)
    return CheckReport(
        source, heads, found.problems, sizes, labels.counts, labels.missing, decode, by_sample,
        near_duplicates=similar,
    )  # fmt: skip


def apply_policy(report: CheckReport, policy: str, out_dir: Path | None = None) -> list[Sample]:
    """Stop on errors (``strict``) or drop the rows with errors (``skip``).

    Args:
        report: What `check_data` found.
        policy: ``strict`` or ``skip``.
        out_dir: Where ``skip`` writes ``skipped.csv``; None writes no file (a run's other
            ranks, evaluation) and only logs the count.

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
        total = len(report.source.samples)
        where = "not written"
        if out_dir is not None:
            path = Path(out_dir) / SKIPPED_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            write_skipped(report, path)
            where = str(path)
        unread = len({p.where for p in report.unread_errors()})
        dropped = total - len(kept)
        # Every count a user reads is the true one: rows that never became samples count too.
        log.warning(
            "dropped %d of %d rows with errors (%d samples with a bad label or image, %d rows "
            "that gave no sample: a missing or unreadable file, a bad cell); list: %s",
            dropped + unread, total + unread, dropped, unread, where,
        )  # fmt: skip
    if not kept:
        raise DataCheckError(format_report(report) + "\nNo samples are left after skipping.")
    return kept


def _attach_source_problems(source: SourceResult, found: Findings) -> None:
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
    hashing: bool,
    workers: int,
    progress: bool,
) -> dict[str, _FileInfo]:
    paths = {key: sample.path for key, sample in zip(keys, samples, strict=True)}
    if not decode:
        return {key: _exists(path) for key, path in paths.items()}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        inspect = partial(_inspect, max_pixels=max_pixels, hashing=hashing)
        results = pool.map(inspect, paths.values())
        bar = tqdm(results, total=len(paths), desc="check images", disable=not progress)
        return dict(zip(paths, bar, strict=True))


def _exists(path: Path) -> _FileInfo:
    if os.path.isfile(path):
        return _FileInfo()
    message = f"{path} does not exist; fix the path or remove the row"
    return _FileInfo(error=ImageError(message, str(path), "missing"))


def _inspect(path: Path, max_pixels: int, hashing: bool) -> _FileInfo:
    try:
        size, hashes = (
            probe_and_hash(path, max_pixels) if hashing else (probe_image(path, max_pixels), None)
        )
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
        return _FileInfo(size=size, hashes=hashes)
    return _FileInfo(size=size, digest=hasher.digest(), hashes=hashes)


def _report_files(
    samples: Sequence[Sample], keys: Sequence[str], files: dict[str, _FileInfo], found: Findings
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
        found.add(Problem(kind, sample_where(sample), message, fix, path=sample.path), index)


def _check_duplicates(
    samples: Sequence[Sample],
    keys: Sequence[str],
    files: dict[str, _FileInfo],
    labels: LabelCounts,
    found: Findings,
) -> None:
    """Report one image (the same path, or the same bytes) listed in several rows."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[files[key].digest or key].append(index)  # same path implies same digest
    for members in (m for m in groups.values() if len(m) > 1):
        conflict = len({tuple(labels.keys[i]) for i in members}) > 1
        for i in members:
            sample = samples[i]
            where = sample_where(sample)
            if conflict:
                others = [j for j in members if j != i]
                theirs = "; ".join(_describe(samples, keys, i, j) for j in others[:EXAMPLES])
                more = f" and {len(others) - EXAMPLES} more" if len(others) > EXAMPLES else ""
                message = (
                    f"{sample.path.name} is labelled {_labels_text(sample)} here, but the same "
                    f"image is labelled {theirs}{more}"
                )
                fix = "decide which labels are right; keep one row for the image, remove the rest"
                problem = Problem("conflicting_duplicate", where, message, fix, path=sample.path)
                found.add(problem, i)
            elif i != members[0]:
                first = _describe(samples, keys, i, members[0], labels=False)
                message = f"{sample.path.name} is the same image as {first}, with the same labels"
                fix = "remove the extra copy: one image in both train and test inflates scores"
                found.add(Problem("duplicate_image", where, message, fix, "warning", sample.path))


def _describe(
    samples: Sequence[Sample], keys: Sequence[str], index: int, other: int, labels: bool = True
) -> str:
    """``<labels> at <row>``, adding the other file when the two rows share bytes, not a path."""
    text = f"{_labels_text(samples[other])} at " if labels else ""
    text += sample_where(samples[other])
    return text + ("" if keys[index] == keys[other] else f" (same bytes: {samples[other].path})")


def _labels_text(sample: Sample) -> str:
    def show(raw: RawLabel) -> str:
        if isinstance(raw, (tuple, list)):
            return "[" + ", ".join(map(str, raw)) + "]"
        return "-" if raw is None else str(raw)

    return ", ".join(f"{name}={show(raw)}" for name, raw in sample.labels.items()) or "nothing"
