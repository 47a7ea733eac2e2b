"""``splits.csv`` and ``config.resolved.json`` of a run folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pictag.config import Config, config_from_dict, config_to_dict
from pictag.data.schema import Sample
from pictag.data.split_file import SPLITS, SplitError, read_split_paths, save_splits
from pictag.fileio import write_json
from pictag.run.meta import (
    META_FILE,
    RESUME_CONFIG_FILE,
    SPLITS_FILE,
    read_json_document,
    read_meta_document,
)


def splits_path(run_dir: str | Path) -> Path:
    """The run's split file, for a config's ``data.split_file`` (that option reads it by the
    same path rule as :func:`read_splits`)."""
    return Path(run_dir) / SPLITS_FILE


def write_splits(run_dir: str | Path, splits: Mapping[str, list[Sample]]) -> None:
    """Store the split a run uses (atomically, image paths absolute), so that evaluation, the
    export's parity check and a resumed run see exactly the same images."""
    save_splits(dict(splits), splits_path(run_dir))


def read_splits(run_dir: str | Path) -> dict[str, list[Path]]:
    """The run's split, its entries resolved as :func:`pictag.data.split_file.entry_path` says.

    Returns:
        ``train``, ``val`` and ``test`` (each present, maybe empty) -> resolved image paths, in
        file order.

    Raises:
        FileNotFoundError: The run has no split file.
        ValueError: The split file has bad rows; the message names them and what to do.
    """
    path = splits_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing, so the run's splits are unknown; `pictag train` writes it"
        )
    try:
        listed = read_split_paths(path)
    except SplitError as err:
        raise SplitError(
            f"{err}\n(`pictag train` wrote {SPLITS_FILE}: fix the rows named, or train again)"
        ) from None
    result: dict[str, list[Path]] = {name: [] for name in SPLITS}
    for image, split in listed.items():
        result[split].append(image)
    return result


def write_resume_config(run_dir: str | Path, config: Config) -> None:
    """Store the config a run starts with (atomically: a kill while rewriting it on resume must
    not leave the run unresumable)."""
    write_json(Path(run_dir) / RESUME_CONFIG_FILE, {"config": config_to_dict(config)})


def read_resume_config(run_dir: str | Path) -> Config:
    """The config to resume a run with: the one it started with, reading the run's own split.

    It comes from ``config.resolved.json``, or from ``pictag.json`` in a run from before that
    file was written; ``data.split_file`` is set to the run's ``splits.csv``, so the resumed run
    trains on the same images in the same splits.

    Raises:
        FileNotFoundError: Neither file is in ``run_dir``.
        ValueError: The file is not valid JSON or holds no valid config.
    """
    run_dir = Path(run_dir)
    source = run_dir / RESUME_CONFIG_FILE
    if source.is_file():
        document = read_json_document(source)
    else:
        source = run_dir / META_FILE
        document = read_meta_document(run_dir)
    try:
        config = config_from_dict(document["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{source} holds no usable config ({type(err).__name__}: {err}); train the run "
            "again without --resume"
        ) from None
    config.data.split_file = str(splits_path(run_dir))
    return config
