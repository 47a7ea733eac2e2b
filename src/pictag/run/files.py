"""``splits.csv`` and ``config.resolved.json`` of a run folder."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from pictag.config import Config, config_from_dict, config_to_dict
from pictag.data.schema import Sample
from pictag.data.split_file import SPLITS, SplitError, read_split_paths, save_splits
from pictag.fileio import write_json
from pictag.models.onnx_cache import CACHE_DIR
from pictag.run.backend_choice import AUTO_BACKEND_FILE
from pictag.run.meta import (
    META_FILE,
    ONNX_FILE,
    RESUME_CONFIG_FILE,
    SPLITS_FILE,
    VAL_OUTPUTS_FILE,
    WEIGHTS_FILE,
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


# What `pictag train` writes into a run folder; --overwrite removes exactly these (never a
# user's own files that happen to sit there).
RUN_ENTRIES = (
    WEIGHTS_FILE,
    META_FILE,
    VAL_OUTPUTS_FILE,
    SPLITS_FILE,
    RESUME_CONFIG_FILE,
    "metrics.jsonl",
    "metrics.csv",
    "skipped.csv",
    "report.json",
    "report.html",
    ONNX_FILE,
    AUTO_BACKEND_FILE,
    CACHE_DIR,  # ONNX Runtime's optimised copies of model.onnx
    "last",
    ".last-old",
    "features",
    "tensorboard",
)


class RunExistsError(ValueError):
    """``pictag train --out DIR`` where DIR already holds a run; the message says what to do."""


def holds_run(run_dir: str | Path) -> bool:
    """Whether a run was started in ``run_dir`` (finished, or interrupted with ``last/``)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (META_FILE, RESUME_CONFIG_FILE, "last"))


def claim_run_dir(run_dir: str | Path, overwrite: bool = False, clear: bool = True) -> None:
    """Make ``run_dir`` ready for a new run: refuse one that holds a run unless ``overwrite``,
    which removes the earlier run's files (and stale temporary files) first.

    Args:
        run_dir: The run folder.
        overwrite: Replace a run that is there.
        clear: Remove the files (False: check only, for the processes of a torchrun job that
            do not write the run).

    Raises:
        RunExistsError: ``run_dir`` holds a run and ``overwrite`` is False.
    """
    run_dir = Path(run_dir)
    if holds_run(run_dir) and not overwrite:
        # Only a run with a saved epoch can be continued: naming --resume for one without
        # (a probe-only run) sent the user back here.
        resume = (
            f"continue it with `pictag train --resume {run_dir}`, "
            if (run_dir / "last").is_dir()
            else ""
        )
        raise RunExistsError(
            f"{run_dir} already holds a run: {resume}replace it with --overwrite "
            "(pictag.train(..., overwrite=True)), or choose another --out"
        )
    if not clear:
        return
    for name in RUN_ENTRIES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    remove_stale_tmp(run_dir)


def discard_unfinished(run_dir: str | Path) -> bool:
    """After a failed start, remove what a run wrote before it had anything worth keeping (no
    model, no resumable epoch): a half-written run folder would otherwise look like a run.

    Returns:
        Whether anything was removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / META_FILE).exists() or (run_dir / "last").exists():
        return False
    claim_run_dir(run_dir, overwrite=True)
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
    return True


def remove_stale_tmp(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files an interrupted write left in ``run_dir`` (``.NAME.*.tmp``,
    as pictag.fileio.atomic_write names them). Call it only when no other process writes to
    the run (a new or resumed run), since a live writer's temporary file looks the same.

    Returns:
        The files removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = [p for p in run_dir.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink()
    return stale
