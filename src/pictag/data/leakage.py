"""Near-duplicates as data problems: `check-data` warnings, and copies split across train/test.

A near-duplicate pair is a warning, not an error: two photos of the same scene may both be
wanted, and only the user can tell. What always hurts is such a pair (or one file, or two
byte-identical files) landing in different splits: the model is then scored on images it
trained on. Splits are final only after `pictag.data.splits.assign_splits`, so that check runs in
`pictag.data.pipeline.prepare_data` and logs the pairs; `check_data` already names the splits
when the source fixed them (folders, a split column).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pictag.data.near_duplicates import HASH_BITS, NearDuplicate, near_duplicate_pairs
from pictag.data.problems import Problem
from pictag.data.report import Findings, sample_where
from pictag.data.schema import Sample

__all__ = ["LEAK_FIX", "Leak", "check_near_duplicates", "find_leaks", "format_leaks", "warn_leaks"]

log = logging.getLogger(__name__)

LEAK_FIX = "remove one, or keep both in the same split via data.split_file"
_SHOWN = 10  # pairs listed in the log; the rest are counted


@dataclass(frozen=True)
class Leak:
    """A pair of (near-)copies in different splits.

    Attributes:
        pair: The two files (``a == b`` for one file listed in several splits).
        splits_a: The splits ``a`` is in.
        splits_b: The splits ``b`` is in.
    """

    pair: NearDuplicate
    splits_a: tuple[str, ...]
    splits_b: tuple[str, ...]

    def __str__(self) -> str:
        a, b = self.pair.a, self.pair.b
        if a == b:
            return f"{a} is listed in {' and '.join(self.splits_a)}"
        return (
            f"{a} ({'/'.join(self.splits_a)}) and {b} ({'/'.join(self.splits_b)}): "
            f"{_how_alike(self.pair)}"
        )


def check_near_duplicates(
    samples: Sequence[Sample],
    keys: Sequence[str],
    hashes: Mapping[str, tuple[int, int]],
    digests: Mapping[str, bytes | None],
    found: Findings,
    max_distance: int,
) -> list[NearDuplicate]:
    """Warn about every near-duplicate pair of files, once per pair.

    Args:
        samples: All samples.
        keys: Each sample's normalised absolute path (several rows may share a file).
        hashes: File key -> (hash, mirror hash), for the files that were hashed.
        digests: File key -> digest of its bytes; byte-identical files are the exact-duplicate
            check's to report, so they are paired only for the leak check.
        found: Where the warnings go.
        max_distance: Largest hash distance (bits) reported.

    Returns:
        The near-duplicate pairs, then one pair per extra byte-identical copy (``identical``),
        naming each file by the path of its first sample: what `find_leaks` needs.
    """
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    files = [key for key in first if key in hashes]
    groups = [digests.get(key) or key for key in files]
    paths = [samples[first[key]].path for key in files]
    by_path = {path: first[key] for path, key in zip(paths, files, strict=True)}
    table = [hashes[key] for key in files]
    pairs = near_duplicate_pairs(paths, table, max_distance, groups=groups) if files else []
    for pair in pairs:
        a, b = samples[by_path[pair.a]], samples[by_path[pair.b]]
        message = f"{b.path.name} looks like {_name(a)}: {_how_alike(pair)}"
        if a.split and b.split and a.split != b.split:
            message += f"; they are in {a.split} and {b.split}, which inflates the test score"
        fix = f"if it is the same picture, {LEAK_FIX}"
        found.add(Problem("near_duplicate", sample_where(b), message, fix, "warning", b.path))
    return pairs + _identical_pairs(samples, first, digests)


def find_leaks(
    pairs: Sequence[NearDuplicate], splits: Mapping[str, Sequence[Sample]]
) -> list[Leak]:
    """The pairs whose files are in different splits, and files listed in several splits.

    Args:
        pairs: From `check_near_duplicates` (``CheckReport.near_duplicates``) or the audit.
        splits: Split name -> its samples, as `assign_splits` returned them.
    """
    where: dict[str, set[str]] = defaultdict(set)
    for name, members in splits.items():
        for sample in members:
            where[_key(sample.path)].add(name)
    leaks = [
        Leak(NearDuplicate(Path(key), Path(key), 0, identical=True), tuple(sorted(names)), ())
        for key, names in where.items()
        if len(names) > 1
    ]
    for pair in pairs:
        in_a, in_b = where.get(_key(pair.a), set()), where.get(_key(pair.b), set())
        if in_a and in_b and (in_a | in_b) != in_a & in_b:  # some copy sits in another split
            leaks.append(Leak(pair, tuple(sorted(in_a)), tuple(sorted(in_b))))
    return leaks


def format_leaks(leaks: Sequence[Leak], shown: int = _SHOWN) -> str:
    """A warning that names the first ``shown`` leaks and the fix."""
    lines = [
        f"{len(leaks)} near-duplicate pair(s) or file(s) are split across train/val/test, which "
        f"inflates the test score ({LEAK_FIX}):"
    ]
    lines += [f"  {leak}" for leak in leaks[:shown]]
    if len(leaks) > shown:
        lines.append(f"  ... and {len(leaks) - shown} more")
    return "\n".join(lines)


def warn_leaks(
    pairs: Sequence[NearDuplicate], splits: Mapping[str, Sequence[Sample]]
) -> list[Leak]:
    """Log a warning listing the leaks, if any; returns them."""
    leaks = find_leaks(pairs, splits)
    if leaks:
        log.warning("%s", format_leaks(leaks))
    return leaks


def _identical_pairs(
    samples: Sequence[Sample], first: Mapping[str, int], digests: Mapping[str, bytes | None]
) -> list[NearDuplicate]:
    by_digest: dict[bytes, list[Path]] = defaultdict(list)
    for key, index in first.items():
        if digests.get(key) is not None:
            by_digest[digests[key]].append(samples[index].path)
    return [
        NearDuplicate(copies[0], other, 0, identical=True)
        for copies in by_digest.values()
        for other in copies[1:]
    ]


def _how_alike(pair: NearDuplicate) -> str:
    if pair.identical:
        return "the same bytes"
    if isinstance(pair.distance, int):
        text = f"perceptual hashes {pair.distance} of {HASH_BITS} bits apart"
    else:
        text = f"feature cosine similarity {1 - pair.distance:.3f}"
    return text + (", mirrored" if pair.flipped else "")


def _name(sample: Sample) -> str:
    where = sample_where(sample)
    return where if where == str(sample.path) else f"{sample.path} ({where})"


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))
