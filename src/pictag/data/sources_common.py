"""Pieces shared by the data sources: the result type, image file names, splits and look-ups.

Kept apart from ``sources.py`` so that the CSV and annotation readers can use them without an
import cycle; users import everything from :mod:`pictag.data.sources`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pictag.config import HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.heads import KINDS, HeadKind

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

log = logging.getLogger(__name__)


@dataclass
class SourceResult:
    """What a source read.

    Attributes:
        samples: One per usable image (rows with errors are left out and listed in ``problems``).
        heads: Head name -> the head config the source used, implicit heads included (a folder
            tree gives ``{'label': multiclass}``, a CSV of 0/1 columns ``{'tags': multilabel}``).
        problems: Problems found while reading: missing images, rows that cannot be parsed, file
            names that do not match the pattern, duplicate rows (warnings), ...
        description: One line for people, e.g. ``CSV labels.csv: 2,000 rows, ...``.
        format: The format actually read (``auto`` resolved).
    """

    samples: list[Sample]
    heads: dict[str, HeadConfig]
    problems: list[Problem]
    description: str
    format: str


def normalize_split(name: str) -> str | None:
    """``train``/``val``/``test`` for a split name in any case (``Validation`` -> ``val``)."""
    return SPLIT_NAMES.get(name.strip().lower())


def is_image_name(name: str) -> bool:
    """An image by its extension (any case), hidden files (``.DS_Store``, ``._x.jpg``) excluded."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted), skipping hidden files and folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .ipynb_checkpoints, ...
        found.extend(Path(folder) / f for f in files if is_image_name(f))
    return sorted(found)


def split_from_folders(path: Path, root: Path) -> str | None:
    """The split named by the nearest folder from ``path`` up to ``root`` itself, if any.

    Folders above ``root`` are not looked at: ``/home/test/data`` says nothing about a split.
    """
    try:
        folders = path.parent.relative_to(root).parts
    except ValueError:
        return None
    for name in reversed((root.name, *folders)):
        split = normalize_split(name)
        if split:
            return split
    return None


def kind_names(test: Callable[[HeadKind], bool]) -> str:
    """The names of the head kinds that pass ``test``, for messages (``a``, ``a or b``)."""
    return " or ".join(kind.name for kind in KINDS.values() if test(kind))


def head_kind(name: str, head: HeadConfig) -> HeadKind:
    """The kind of head ``name``.

    Raises:
        ValueError: the kind is unknown; the message names the key and the known kinds.
    """
    kind = KINDS.get(head.kind)
    if kind is None:
        raise ValueError(f"heads.{name}.kind: must be one of {', '.join(KINDS)}; got {head.kind!r}")
    return kind


def refine_heads(
    implied: dict[str, HeadConfig], configured: dict[str, HeadConfig]
) -> dict[str, HeadConfig]:
    """The heads a source names, each changed by the configured settings of the same name
    (``data.all_heads``), then the configured heads the source does not name.

    Only settings that differ from :class:`HeadConfig`'s defaults change a head, so
    ``heads.age.bins`` leaves the kind and group the source chose as they are.
    """
    defaults = HeadConfig()
    refined = {}
    for name, head in implied.items():
        given = configured.get(name)
        if given is not None:
            changes = {
                field.name: getattr(given, field.name)
                for field in dataclasses.fields(HeadConfig)
                if getattr(given, field.name) != getattr(defaults, field.name)
            }
            head = dataclasses.replace(head, **changes)
        refined[name] = head
    refined.update({name: head for name, head in configured.items() if name not in implied})
    return refined


def single_head(
    heads: dict[str, HeadConfig],
    default_name: str,
    default_kind: str,
    source: str,
    *,
    tags: bool,
    all_heads: bool = False,
) -> tuple[str, HeadConfig]:
    """The one head of a source that gives one label per image, with its config.

    Args:
        heads: The configured heads; none gives ``default_name`` of kind ``default_kind``.
        default_name: The head's name when none is configured.
        default_kind: The head's kind when none is configured.
        source: The source, for messages (``a Pascal VOC folder``).
        tags: Whether the source gives tag lists; the head's kind must read labels as such.
        all_heads: ``data.all_heads``: the configured head only changes the default head.

    Raises:
        ValueError: more than one head is configured, or the configured kind does not fit.
    """
    if all_heads:
        heads = refine_heads({default_name: HeadConfig(kind=default_kind)}, heads)
    if not heads:
        return default_name, HeadConfig(kind=default_kind)
    if len(heads) > 1:
        raise ValueError(
            f"{source} gives one head, but {len(heads)} are configured ({', '.join(heads)}); "
            "configure one head, or use a CSV with one column per head"
        )
    name, head = next(iter(heads.items()))
    kind = KINDS.get(head.kind)
    if kind is None or kind.tags != tags or kind.spatial:
        fits = kind_names(lambda k: k.tags == tags and not k.spatial)
        raise ValueError(f"heads.{name}.kind must be {fits} for {source}, got {head.kind!r}")
    return name, head


class ImageFinder:
    """Finds an image named by a CSV cell or an annotation file in a list of folders.

    Each folder is listed once (one ``scandir`` per folder instead of a ``stat`` per guess), so
    resolving thousands of ids, with extension guesses, stays fast.
    """

    def __init__(self, roots: list[Path], allow_outside: bool = False) -> None:
        self.roots = roots
        self.allow_outside = allow_outside
        self._listings: dict[Path, frozenset[str]] = {}

    def leaves_roots(self, value: str) -> bool:
        """Whether ``value`` names a file outside the image folders (an absolute path, or one
        with ``..``), which a label file may not do unless ``data.allow_outside_roots``: a
        label file from elsewhere must not make pictag read, say, /etc/passwd."""
        path = Path(value.replace("\\", "/"))
        return not self.allow_outside and (path.is_absolute() or ".." in path.parts)

    def find(self, value: str) -> tuple[Path, Path] | None:
        """``(image path, the root it was found in)``, or None when no root holds it.

        ``value`` is a path relative to a root; when the file is not there as written and the
        value has no image extension (an id such as ``1042``), the common extensions are tried.
        """
        if self.leaves_roots(value):
            return None
        names = [value]
        if "\\" in value:
            names.append(value.replace("\\", "/"))  # paths written on Windows
        for root in self.roots:
            for name in names:
                found = self._find_in(root, name)
                if found is not None:
                    return found, root
        return None

    def _find_in(self, root: Path, value: str) -> Path | None:
        candidate = root / value
        listing = self._listing(candidate.parent)
        if candidate.name in listing:
            return candidate
        if candidate.suffix.lower() in IMAGE_EXTENSIONS:
            return None
        for ext in IMAGE_EXTENSIONS:
            for variant in (ext, ext.upper()):
                if candidate.name + variant in listing:
                    return candidate.with_name(candidate.name + variant)
        return None

    def _listing(self, folder: Path) -> frozenset[str]:
        if folder not in self._listings:
            names: set[str] = set()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        names.update(_file_name(entry))
            except OSError:  # missing or unreadable folder: nothing found there
                pass
            self._listings[folder] = frozenset(names)
        return self._listings[folder]


def _file_name(entry: os.DirEntry) -> list[str]:
    """``[entry.name]`` for a file; nothing for anything else, and for an entry that cannot
    be read (a looping symlink), which is named in a warning: one bad entry must not hide the
    folder's other images."""
    try:
        return [entry.name] if entry.is_file() else []
    except OSError as err:
        log.warning("%s: skipped, it cannot be read (%s)", entry.path, err.strerror or err)
        return []


def split_note(samples: list[Sample]) -> str:
    """``, splits train 1,400, test 100`` for descriptions; empty when no sample has a split."""
    counts = Counter(s.split for s in samples if s.split)
    if not counts:
        return ""
    order = [s for s in ("train", "val", "test") if s in counts]  # sources normalise to these
    return ", splits " + ", ".join(f"{s} {counts[s]:,}" for s in order)
