"""Resumable training state in ``RUN_DIR/last/``, written at the end of every epoch.

A ``kill -9`` at any moment leaves a complete checkpoint on disk. Each save builds the whole new
checkpoint in a fresh ``.last-tmp-<random>/`` folder (every file written atomically and fsynced),
marks it complete with ``done.json`` (written last), then swaps folders: ``last`` -> ``.last-old``,
temp -> ``last``, remove ``.last-old``. A kill between the two renames leaves the previous
checkpoint in ``.last-old/``, which loading falls back to; temp folders are never loaded and
the next save removes them. One process writes a run folder (rank 0 under torchrun).

Files in a checkpoint folder:
    model.safetensors  the model's weights (and ``ema.safetensors``, the EMA model's)
    state.pt           optimizer, scheduler and grad-scaler state, the number of completed
                       epochs, the caller's ``extra`` and the RNG states of Python, NumPy and
                       torch; read back with ``torch.load(weights_only=True)``, so loading
                       never unpickles arbitrary objects
    done.json          the names and sizes of the other files: a folder without it, or whose
                       files differ from it, is incomplete
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from pictag.fileio import atomic_write, umask, write_json
from pictag.training.checkpoint_state import drop_callables, plain, rng_state, set_rng_state

LAST_DIR = "last"
OLD_DIR = ".last-old"
TMP_PREFIX = ".last-tmp-"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
DONE_FILE = "done.json"
FORMAT = "pictag-last/1"


def save_last(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    extra: dict[str, Any],
    ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Replace ``run_dir/last/`` with the current training state, atomically.

    Args:
        run_dir: The run folder.
        model: The model being trained (unwrapped from DistributedDataParallel).
        optimizer: Its optimizer.
        scheduler: The learning-rate scheduler.
        epoch: The number of completed epochs.
        extra: Plain data to resume with (best score, history, bad epochs...): dicts, lists,
            numbers, strings; NumPy scalars and arrays are stored as Python numbers and lists.
        ema: The EMA copy of the model, if training keeps one.
        scaler: The fp16 gradient scaler, if training uses one.

    Raises:
        TypeError: Some state could not be read back safely (the message names it); the
            previous checkpoint is left as it was.
    """
    run_dir = Path(run_dir)
    state = {
        "format": FORMAT,
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict(),
        "scheduler": drop_callables(scheduler.state_dict()),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "extra": extra,
        "rng": rng_state(),
    }
    state = plain(state, "state")  # fail before touching the disk
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f"{TMP_PREFIX}*"):  # left by a save that was killed
        _remove_dir(stale)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700: `last/` is as readable as the run
    try:
        _write_folder(tmp, model, ema, state)
        _swap_in(run_dir, tmp)
    finally:
        _remove_dir(tmp)  # only still there if writing failed


def load_last(
    run_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[int, dict[str, Any]]:
    """Restore the state saved by :func:`save_last` in place, RNG states included.

    Args:
        run_dir: The run folder.
        model: A freshly built model of the same architecture.
        optimizer: A freshly built optimizer over its parameters (same parameter groups).
        scheduler: A freshly built scheduler (the same schedule: functions are not saved).
        ema: The EMA model, if training keeps one; the checkpoint must then have EMA weights.
        scaler: The gradient scaler, if training uses one.
        map_location: Where ``state.pt``'s tensors are loaded; the optimizer then moves its
            state to its parameters' device.

    Returns:
        The number of completed epochs and the ``extra`` data given to :func:`save_last`.

    Raises:
        FileNotFoundError: ``run_dir`` holds no complete checkpoint.
        ValueError: ``ema`` was given but the checkpoint was saved without EMA weights.
    """
    run_dir = Path(run_dir)
    folder = _complete_folder(run_dir)
    if folder is None:
        raise FileNotFoundError(
            f"no resumable checkpoint in {run_dir}: expected a complete {run_dir / LAST_DIR}/ "
            f"(with {DONE_FILE}), written at the end of each epoch of `pictag train`"
        )
    if ema is not None and not (folder / EMA_FILE).is_file():
        raise ValueError(
            f"{folder} holds no EMA weights: resume with the train.ema setting the run was "
            "started with"
        )
    state = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=True)
    safetensors.torch.load_model(model, folder / MODEL_FILE, strict=True)
    if ema is not None:
        safetensors.torch.load_model(ema, folder / EMA_FILE, strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:  # a disabled scaler saves {}: nothing to restore
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["epoch"], state["extra"]


def has_last(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint to resume from."""
    return _complete_folder(Path(run_dir)) is not None


def last_extra(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``extra`` of ``run_dir``'s checkpoint, read without a model to load (None: none)."""
    folder = _complete_folder(Path(run_dir))
    if folder is None:
        return None
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)["extra"]


def _write_folder(
    folder: Path, model: nn.Module, ema: nn.Module | None, state: dict[str, Any]
) -> None:
    """Write every file, then ``done.json`` with their sizes, then fsync the folder."""
    modules = {MODEL_FILE: model, **({EMA_FILE: ema} if ema is not None else {})}
    for name, module in modules.items():
        atomic_write(folder / name, _module_writer(module))
    atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
    sizes = {name: (folder / name).stat().st_size for name in [*modules, STATE_FILE]}
    write_json(folder / DONE_FILE, {"format": FORMAT, "epoch": state["epoch"], "files": sizes})
    _fsync_dir(folder)  # the files' names must be durable before the folder becomes `last`


def _module_writer(module: nn.Module) -> Callable[[Path], None]:
    # save_model (not save_file) copes with tied weights and channels_last tensors
    return lambda tmp: safetensors.torch.save_model(module, str(tmp), force_contiguous=True)


def _swap_in(run_dir: Path, tmp: Path) -> None:
    """Make the complete folder ``tmp`` the new ``last``; some complete checkpoint is on disk
    at every moment in between."""
    last, old = run_dir / LAST_DIR, run_dir / OLD_DIR
    if _is_complete(last):
        _remove_dir(old)  # a leftover of an earlier interrupted swap: `last` supersedes it
        os.rename(last, old)
    else:
        # No complete `last`: an earlier save was killed between its renames, so `.last-old`
        # is the fallback and must stay until the new `last` is in place.
        _remove_dir(last)
    os.rename(tmp, last)
    _fsync_dir(run_dir)
    _remove_dir(old)


def _complete_folder(run_dir: Path) -> Path | None:
    """``last/`` if complete, else ``.last-old/`` (a kill between the renames), else None."""
    for name in (LAST_DIR, OLD_DIR):
        if _is_complete(run_dir / name):
            return run_dir / name
    return None


def _is_complete(folder: Path) -> bool:
    try:
        done = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
        files = done["files"]
        return (
            done["format"] == FORMAT
            and {MODEL_FILE, STATE_FILE} <= files.keys()
            and all((folder / name).stat().st_size == size for name, size in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_dir(folder: Path) -> None:
    if not folder.exists():
        return
    # done.json goes first, so a kill during the removal cannot leave a folder that looks complete
    (folder / DONE_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a power cut, not only a kill); POSIX only."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
