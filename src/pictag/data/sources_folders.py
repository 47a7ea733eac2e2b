"""Sources read from the images themselves: a folder tree with one folder per class
(:func:`read_folder`) and labels in the file names (:func:`read_filenames`)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import RawLabel, Sample
from pictag.data.sources_common import (
    SourceResult,
    head_kind,
    is_image_name,
    list_images,
    normalize_split,
    refine_heads,
    single_head,
    split_from_folders,
    split_note,
)
from pictag.heads import HeadKind


def read_folder(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Read ``root/<class>/<image>`` trees (images at any depth under the class folder).

    A root whose ``train/``, ``val/`` (``valid``, ``validation``) or ``test/`` folders hold class
    folders gives each image that split. Every root in ``data.images`` is read.

    Raises:
        ValueError: no roots, a root that is not a folder, or no images in class folders.
    """
    name, head = single_head(
        heads,
        "label",
        "multiclass",
        "a folder tree (one class per folder)",
        tags=False,
        all_heads=data.all_heads,
    )
    roots = _roots(data, "the folder with one subfolder per class")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for root in roots:
        for split, class_dir in _class_folders(root, problems):
            images = list_images(class_dir)
            if not images:  # a class nobody will learn: say so rather than drop it unseen
                problems.append(_empty_class(class_dir))
            samples.extend(
                Sample(path, {name: class_dir.name}, split, str(path)) for path in images
            )
    if not samples:
        raise ValueError(
            f"data.images: no images in class folders under {', '.join(map(str, roots))}; "
            "expected root/<class>/<image> (or root/train/<class>/<image>)"
        )
    classes = Counter(s.labels[name] for s in samples)
    text = f"folder {', '.join(r.name or str(r) for r in roots)}: {len(samples):,} images"
    text += f" in {len(classes)} classes{split_note(samples)}"
    return SourceResult(samples, {name: head}, problems, text, "folder")


def _class_folders(root: Path, problems: list[Problem]) -> list[tuple[str | None, Path]]:
    """(split, class folder) pairs of a root, noting stray files and folders as warnings."""
    children = _subfolders(root)
    split_dirs = [d for d in children if normalize_split(d.name) and _subfolders(d)]
    for path in sorted(root.iterdir()):
        if is_image_name(path.name) and path.is_file():
            problems.append(_ignored(path, "an image outside any class folder"))
    if not split_dirs:
        return [(None, d) for d in children]
    for folder in children:
        if folder not in split_dirs:
            problems.append(_ignored(folder, "a folder beside the split folders"))
    return [(normalize_split(s.name), d) for s in split_dirs for d in _subfolders(s)]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _empty_class(folder: Path) -> Problem:
    message = f"class folder {folder.name!r} holds no images; the class is left out"
    fix = "add its images, or remove the folder"
    return Problem("empty_class", str(folder), message, fix, severity="warning", path=folder)


def _ignored(path: Path, what: str) -> Problem:
    fix = "move it into a class folder, or remove it"
    return Problem("ignored", str(path), f"{what}; not read", fix, severity="warning", path=path)


def read_filenames(data: DataConfig, heads: dict[str, HeadConfig]) -> SourceResult:
    """Take each head's label from a named group of ``data.pattern`` matched on file names.

    The pattern is applied with ``re.match`` to the file name (not the folder): anchored at the
    start, not at the end, so ``(?P<age>\\d+)_(?P<gender>\\d)_`` ignores the rest of the name.
    A head reads the group named by its ``group`` (default: the head name); with no heads
    configured, every named group becomes a multiclass head. Images in a ``train``/``val``/
    ``test`` folder get that split. Names that do not match are 'no_match' warnings.

    Raises:
        ValueError: the pattern is not a valid regex, or names no group a head needs.
    """
    pattern = _compile(data.pattern or "")
    implied = {group: HeadConfig() for group in pattern.groupindex}
    heads = refine_heads(implied, heads) if data.all_heads else dict(heads) or implied
    groups = {name: head.group or name for name, head in heads.items()}
    kinds = {name: head_kind(name, head) for name, head in heads.items()}
    for name, group in groups.items():
        if group not in pattern.groupindex:
            known = ", ".join(pattern.groupindex) or "none"
            raise ValueError(f"heads.{name}: data.pattern has no group {group!r} (groups: {known})")
    samples, problems, total = [], [], 0
    for root in _roots(data, "the folder with the images"):
        for path in list_images(root):
            total += 1
            match = pattern.match(path.name)
            if match is None:
                problems.append(_no_match(path, pattern.pattern))
                continue
            labels = {n: _group_label(match[groups[n]], kinds[n], heads[n]) for n in heads}
            samples.append(Sample(path, labels, split_from_folders(path, root), str(path)))
    text = f"file names under {', '.join(data.images)}: {total:,} images, "
    text += f"{len(samples):,} match {pattern.pattern!r}{split_note(samples)}"
    return SourceResult(samples, heads, problems, text, "filename")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"data.pattern is not a valid regular expression: {err}") from None
    if not compiled.groupindex:
        raise ValueError(r"data.pattern needs named groups, one per head: (?P<age>\d+)_...")
    return compiled


def _group_label(value: str | None, kind: HeadKind, head: HeadConfig) -> RawLabel:
    if not value:
        return None  # an optional group that did not take part
    return kind.parse(value, head.separator)


def _no_match(path: Path, pattern: str) -> Problem:
    return Problem(
        "no_match",
        str(path),
        f"file name does not match data.pattern {pattern!r}; not read",
        "rename the file, or loosen data.pattern",
        severity="warning",
        path=path,
    )


def _roots(data: DataConfig, what: str) -> list[Path]:
    if not data.images:
        raise ValueError(f"data.images: give {what} (or data.format: builtin for the demo set)")
    roots = [Path(p) for p in data.images]
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"data.images: folder not found: {root}")
    return roots
