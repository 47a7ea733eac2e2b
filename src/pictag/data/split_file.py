"""The split file: an ``image,split`` CSV that fixes every image's split.

`save_splits` writes the one a run used, so a second run, evaluation or another tool sees exactly
the same sets; `load_split_file` reads one back (or one written by hand) and names every bad row
by line; `read_split_paths` and `splits_of` match its entries to images; `names_from_split_file`
gives each sample the split the file lists for it.

One path rule, for every reader: an absolute entry is that path; a relative entry is relative
to the split file's folder (not to the working directory); entries and images are compared as
resolved paths. `save_splits` writes absolute paths, so a run folder can be moved or copied.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pictag.data.schema import Sample
from pictag.data.sources_common import normalize_split
from pictag.fileio import atomic_write

SPLITS = ("train", "val", "test")
_IMAGE_COLUMNS = ("image", "path", "file", "filename")
_SHOWN = 5  # how many offending images an error message lists


class SplitError(ValueError):
    """A split that cannot be used; the message names the file, line or image and a fix."""


def save_splits(splits: dict[str, list[Sample]], path: Path) -> None:
    """Write an ``image,split`` CSV that ``data.split_file`` can read back.

    Image paths are written absolute: a source gives them relative to the working directory,
    which the path rule does not know. The file is written next to its destination and moved
    into place, so an interrupted run never leaves half a split file behind.
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected {', '.join(SPLITS)}")

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "split"])
            for name in SPLITS:
                writer.writerows(
                    [os.path.abspath(str(sample.path)), name] for sample in splits.get(name, [])
                )

    atomic_write(path, write)


def load_split_file(path: Path) -> dict[str, str]:
    """Read an ``image,split`` CSV (header optional; ``.tsv`` is tab-separated).

    Returns:
        Image path as written in the file -> ``train``, ``val`` or ``test``.

    Raises:
        SplitError: the file is missing, or rows are malformed, have an unknown split, or list
            the same image twice with different splits; every bad row is named by line.
    """
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split file not found: {path}")
    result: dict[str, str] = {}
    first_line: dict[str, int] = {}
    errors: list[str] = []
    columns = (0, 1)
    first_row = True
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            for row in reader:
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                header = _header_columns(cells) if first_row else None
                first_row = False
                if header is not None:
                    columns = header
                    continue
                image, split = _parse_row(cells, columns, f"{path}:{reader.line_num}", errors)
                if image is None or split is None:
                    continue
                if image in result and result[image] != split:
                    errors.append(
                        f"{path}:{reader.line_num}: {image} is listed as {split}, but as "
                        f"{result[image]} on line {first_line[image]}"
                    )
                    continue
                result.setdefault(image, split)
                first_line.setdefault(image, reader.line_num)
        except csv.Error as err:
            errors.append(f"{path}:{reader.line_num}: not valid CSV ({err})")
    if errors:
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise SplitError(f"bad rows in split file {path}:\n  " + "\n  ".join(errors[:10]) + more)
    return result


def entry_path(image: str, split_file: Path) -> Path:
    """Where a split file's entry points: the path rule of every split file reader.

    Args:
        image: The entry as written in the file.
        split_file: The file it is written in.

    Returns:
        The resolved path: ``image`` itself when absolute, else relative to the file's folder;
        a relative entry that is not there but is relative to the working folder means that
        file (split files written by hand, and runs' ``splits.csv`` before pictag wrote absolute
        paths, hold paths as the data source gave them).
    """
    beside = (Path(split_file).parent / image).resolve()  # an absolute `image` replaces the folder
    if beside.exists() or Path(image).is_absolute():
        return beside
    here = Path(image).resolve()
    return here if here.exists() else beside


def read_split_paths(path: Path) -> dict[Path, str]:
    """Read a split file with its entries resolved by :func:`entry_path`.

    Returns:
        Resolved image path -> ``train``, ``val`` or ``test``, in file order.

    Raises:
        SplitError: the file is bad (see `load_split_file`), or two entries name the same image
            (e.g. ``a.jpg`` and its absolute path) with different splits.
    """
    path = Path(path)
    result: dict[Path, str] = {}
    for image, split in load_split_file(path).items():
        resolved = entry_path(image, path)
        if result.setdefault(resolved, split) != split:
            raise SplitError(
                f"split file {path} lists {resolved} as both {result[resolved]} and {split} "
                f"(last as {image!r}); keep one of the rows"
            )
    return result


def splits_of(samples: Sequence[Sample], listed: Mapping[Path, str]) -> list[str | None]:
    """Each sample's split in ``listed`` (from :func:`read_split_paths`), None where unlisted.

    Samples are matched by their resolved path, as entries are.
    """
    return [listed.get(Path(sample.path).resolve()) for sample in samples]


def names_from_split_file(samples: list[Sample], path: Path) -> list[str]:
    """Each sample's split as the split file at ``path`` lists it (see :func:`entry_path`).

    Raises:
        SplitError: the file is bad (see `read_split_paths`) or does not list every sample.
    """
    names = splits_of(samples, read_split_paths(path))
    missing = [sample for sample, name in zip(samples, names, strict=True) if name is None]
    if missing:
        shown = ", ".join(str(s.path) for s in missing[:_SHOWN])
        raise SplitError(
            f"{len(missing)} of {len(samples)} images are not listed in split file {path} "
            f"(e.g. {shown}); add them to the file (absolute paths, or relative to its folder), "
            "or remove data.split_file to split automatically"
        )
    return [name or "" for name in names]


def _header_columns(cells: list[str]) -> tuple[int, int] | None:
    """(image column, split column) when ``cells`` is a header row, else None."""
    lowered = [cell.lower() for cell in cells]
    if "split" not in lowered:
        return None
    split = lowered.index("split")
    named = [lowered.index(n) for n in _IMAGE_COLUMNS if n in lowered]
    return (named[0] if named else int(split == 0)), split


def _parse_row(
    cells: list[str], columns: tuple[int, int], where: str, errors: list[str]
) -> tuple[str | None, str | None]:
    if len(cells) <= max(columns):
        errors.append(f"{where}: expected two columns image,split; got {','.join(cells)!r}")
        return None, None
    image, value = cells[columns[0]], cells[columns[1]]
    if not image:
        errors.append(f"{where}: the image cell is empty")
        return None, None
    split = normalize_split(value)
    if split is None:
        errors.append(
            f"{where}: unknown split {value!r} for {image}; use train, val (or valid, validation) "
            "or test"
        )
    return image, split
