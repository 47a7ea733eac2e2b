"""Which images an evaluation sees.

By default a run is evaluated on its own split: the run's data config is read again and the
images that ``RUN/splits.csv`` lists under the wanted split are taken, so evaluation and threshold
tuning see exactly the images training set aside. ``data`` may instead name another split file
(``image,split`` CSV; entries absolute or relative to its folder) over the same source, or a
YAML config for other data; a config without a split file or split column is split as training
would split it, and ``split='all'`` takes every image (a separate test set).

Only the chosen images are checked (decoded): images that became unreadable since training, or
whose labels the model does not know, are left out with a warning rather than stopping the
evaluation (``policy: strict`` in a given config stops instead).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from pictag.config import Config, load_config
from pictag.data.report import sample_where
from pictag.data.schema import Head, LabelError, Sample
from pictag.data.sources import SourceResult, read_samples
from pictag.data.split_file import SplitError, read_split_paths, splits_of
from pictag.data.splits import assign_splits
from pictag.data.validate import DataCheckError, check_data, format_report
from pictag.run import LoadedRun, read_splits, splits_path

log = logging.getLogger(__name__)
SPLIT_CHOICES = ("train", "val", "test", "all")
CONFIG_SUFFIXES = (".yaml", ".yml")
SPLIT_FILE_SUFFIXES = (".csv", ".tsv")
_SHOWN = 5  # left-out images named one by one in the log


MAX_NAMED = 10  # images named in a warning; the count covers the rest


@dataclasses.dataclass
class Listed:
    """A split listing to choose images by.

    Attributes:
        where: The split file it came from, for messages.
        paths: Resolved image path -> split name.
    """

    where: Path
    paths: Mapping[Path, str]


def eval_samples(
    run: LoadedRun,
    run_dir: Path,
    data: str | Path | None = None,
    split: str | None = None,
    progress: bool = True,
) -> tuple[list[Sample], str]:
    """The checked samples of ``split``, in source order, and the split actually used.

    Args:
        run: The loaded run (its config and heads).
        run_dir: The run folder, for its ``splits.csv``.
        data: None (the run's own data and split), a CSV split file, or a YAML config.
        split: ``train``, ``val``, ``test`` or ``all``. ``test`` falls back to ``val``, with a
            warning, when there are no test images. None: ``all`` for a data config of its own
            (a data set the run never saw is evaluated whole, less any image the run trained or
            validated on, named in a warning), else ``test``.
        progress: Show a progress bar while checking images.

    Returns:
        The samples (possibly empty) and the split name.

    Raises:
        FileNotFoundError: No split file for the run, or ``data`` does not exist.
        ValueError: ``split`` or the kind of ``data`` is unknown, or the split file has bad rows
            or lists none of the source's images.
        DataCheckError: A given config has ``policy: strict`` and images fail the checks.
    """
    if split is not None and split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}; got {split!r}")
    config, listed = _eval_config(run, run_dir, data)
    unseen = split is None and data is not None and listed is None
    split = split or ("all" if unseen else "test")
    source = read_samples(config.data, config.heads)
    if listed is not None:
        by_split = _listed(source.samples, listed)
    else:
        kept = _checked(source, source.samples, config, progress)
        # 'all' skips the split: a separate test set may mark every image as test.
        by_split = {"all": kept} if split == "all" else assign_splits(kept, run.heads, config.data)
    if split == "test" and not by_split.get("test"):
        log.warning("the run has no test images: evaluating on the validation split instead")
        split = "val"
    chosen = by_split.get(split, [])
    if listed is not None:
        chosen = _checked(source, chosen, config, progress)
    if unseen:
        chosen = _not_trained_on(chosen, run_dir, Path(str(data)))
    return _encodable(chosen, run.heads), split


def _not_trained_on(samples: list[Sample], run_dir: Path, data: Path) -> list[Sample]:
    """``samples`` less the images of the run's train and val splits, with a warning when any
    are left out: a score over images the model learnt from would not be honest."""
    try:
        splits = read_splits(run_dir)
    except FileNotFoundError:
        return samples
    seen = {path for name in ("train", "val") for path in splits.get(name, [])}
    kept = [sample for sample in samples if Path(sample.path).resolve() not in seen]
    if len(kept) < len(samples):
        log.warning(
            "%d of %d images of %s are in the run's train or val split; left out, so the "
            "score is over images the run never learnt from (--split all keeps them)",
            len(samples) - len(kept),
            len(samples),
            data,
        )
    return kept


def _eval_config(
    run: LoadedRun, run_dir: Path, data: str | Path | None
) -> tuple[Config, Listed | None]:
    """The config to read the data with, and the split listing to choose images by (if any)."""
    config = copy.deepcopy(run.config)
    config.data.policy = "skip"
    if data is None:
        return config, _run_listing(run_dir)
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in SPLIT_FILE_SUFFIXES:
        return config, Listed(path, read_split_paths(path))
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(
            f"--data {path}: expected a YAML config (.yaml) or a split file (.csv, .tsv)"
        )
    given = load_config(path)
    config.data = given.data
    if given.heads:  # otherwise the run's head options (columns, separators) read the labels
        config.heads = given.heads
    if not given.data.split_file:
        return config, None
    split_file = Path(given.data.split_file)
    return config, Listed(split_file, read_split_paths(split_file))


def _run_listing(run_dir: Path) -> Listed:
    """The run's own split, from the run folder."""
    try:
        splits = read_splits(run_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}; pass --data with a split file (image,split CSV) or a data config"
        ) from None
    paths = {image: name for name, images in splits.items() for image in images}
    return Listed(splits_path(run_dir), paths)


def _warn_unread(listed: Listed, read: set[Path]) -> None:
    """Name the listed images the data did not give (a missing file, a dropped row): every
    dropped row is named, so a smaller evaluation never passes unnoticed."""
    unread = [(path, name) for path, name in listed.paths.items() if path not in read]
    if not unread:
        return
    shown = ", ".join(f"{path} ({name})" for path, name in unread[:MAX_NAMED])
    more = f" and {len(unread) - MAX_NAMED} more" if len(unread) > MAX_NAMED else ""
    log.warning(
        "%d of %d images listed in %s are not evaluated: the data does not give them "
        "(missing files or dropped rows): %s%s",
        len(unread), len(listed.paths), listed.where, shown, more,
    )  # fmt: skip


def _listed(samples: Sequence[Sample], listed: Listed) -> dict[str, list[Sample]]:
    """Samples per split (and ``all``) as ``listed`` gives them, in source order; samples it
    does not list are left out (training may have dropped them).

    Raises:
        SplitError: It lists none of the samples (its entries point elsewhere).
    """
    result: dict[str, list[Sample]] = {name: [] for name in SPLIT_CHOICES}
    for sample, name in zip(samples, splits_of(samples, listed.paths), strict=True):
        if name is not None:
            result[name].append(sample)
            result["all"].append(sample)
    _warn_unread(listed, {Path(s.path).resolve() for s in result["all"]})
    if samples and listed.paths and not result["all"]:
        raise SplitError(
            f"{listed.where} lists none of the {len(samples)} images the data config reads "
            f"(e.g. {samples[0].path}); split file entries are absolute paths or relative to "
            "the file's folder"
        )
    return result


def _checked(
    source: SourceResult, samples: list[Sample], config: Config, progress: bool
) -> list[Sample]:
    """The samples that pass the file and label checks; the others are left out and logged."""
    if not samples:
        return []
    subset = dataclasses.replace(source, samples=list(samples), problems=[])
    # No near-duplicate hashing: it warns about training data, and costs a third of the pass.
    report = check_data(subset, config.data, decode=True, progress=progress, near_duplicates=None)
    dropped = report.dropped()
    if dropped and config.data.policy == "strict":
        raise DataCheckError(format_report(report))
    for sample, problems in dropped[:_SHOWN]:
        log.warning("left out %s: %s", sample_where(sample), problems[0].message)
    if len(dropped) > _SHOWN:
        log.warning("... and %d more images left out", len(dropped) - _SHOWN)
    # Errors about a head as a whole (one class in this subset) do not concern evaluation.
    return report.kept()


def _encodable(samples: list[Sample], heads: dict[str, Head]) -> list[Sample]:
    """The samples whose labels the model's heads can encode; others are left out and logged."""
    kept, unknown = [], []
    for sample in samples:
        try:
            for name, head in heads.items():
                head.encode(sample.labels.get(name))
        except LabelError as err:
            unknown.append(f"{sample_where(sample)}: {err}")
            continue
        kept.append(sample)
    if unknown:
        log.warning(
            "left out %d images with labels the model does not know, e.g. %s",
            len(unknown),
            "; ".join(unknown[:_SHOWN]),
        )
    return kept
