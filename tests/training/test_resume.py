"""A run interrupted at any moment and resumed ends exactly where an uninterrupted run ends.

Equality is exact (bitwise), not approximate: in deterministic mode on the CPU, with the same
thread count, a resumed run restores every bit of state (weights and EMA weights from
safetensors; optimizer, scheduler and RNG states from ``state.pt``; the per-epoch shuffle and
MixUp generators are reseeded from the epoch number), so it performs the same float operations
in the same order as the uninterrupted run. Any tolerance would hide a state that is lost, e.g.
an RNG stream restored one augmentation off, which shifts every later number by far more than
rounding. Only the timing metric (images per second) differs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import pictag.training.epochs as epochs
from pictag.cli import main
from pictag.config import Config, load_config
from pictag.training.trainer import train

EPOCHS = 8
# Augmentation, MixUp and EMA draw on every RNG and state that resuming must restore.
SETTINGS = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.warmup_epochs=0",
    f"train.epochs={EPOCHS}",
    "train.deterministic=true",
    "train.workers=0",
    "train.device=cpu",
    "train.amp=off",
    "train.augment=light",
    "train.mixup=0.2",
    "train.ema=0.9",
]


# One thread everywhere: tiny tensors gain nothing from more, and on a busy machine waiting for a
# second core made these runs many times slower. The in-process runs and the subprocesses must
# agree anyway, since the thread count can change float summation order.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Interrupted(Exception):
    """Stands in for a Ctrl-C right after a checkpoint."""


def _config(images: Path) -> Config:
    return load_config(overrides=[f"data.images={images}", *SETTINGS])


def _history(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "per_s" not in k} for line in lines]


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = safetensors.torch.load_file(a), safetensors.torch.load_file(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def _assert_same_run(run: Path, reference: Path) -> None:
    assert _history(run) == _history(reference)
    assert [r["epoch"] for r in _history(run)] == list(range(1, EPOCHS + 1))  # no duplicates
    _assert_same_weights(run / "model.safetensors", reference / "model.safetensors")
    _assert_same_weights(
        run / "last" / "model.safetensors", reference / "last" / "model.safetensors"
    )
    meta, ref_meta = (json.loads((p / "pictag.json").read_text()) for p in (run, reference))
    assert (meta["epoch"], meta["metrics"]) == (ref_meta["epoch"], ref_meta["metrics"])


def _train_interrupted_after_epoch_2(images: Path, run: Path, monkeypatch) -> None:
    save_last = epochs.save_last

    def save_then_interrupt(*args, **kwargs):
        save_last(*args, **kwargs)
        if kwargs["epoch"] == 2:
            raise Interrupted

    monkeypatch.setattr(epochs, "save_last", save_then_interrupt)
    with pytest.raises(Interrupted):
        train(_config(images), run, progress=False)
    monkeypatch.undo()
    assert [r["epoch"] for r in _history(run)] == [1, 2]


def test_interrupted_after_epoch_2_then_resumed_equals_uninterrupted(
    folder_tree, tmp_path, monkeypatch
):
    reference = train(_config(folder_tree), tmp_path / "full", progress=False)
    _train_interrupted_after_epoch_2(folder_tree, tmp_path / "cut", monkeypatch)

    # The config given is ignored: a resumed run reads its own (and its split) from the folder.
    resumed = train(Config(), tmp_path / "cut", resume=True, progress=False)

    assert (resumed.best_epoch, resumed.best_score) == (reference.best_epoch, reference.best_score)
    # As JSON text: an undefined metric (NaN) equals itself there, not as a float.
    assert json.dumps(resumed.metrics) == json.dumps(reference.metrics)
    assert json.dumps(
        [{k: v for k, v in r.items() if "per_s" not in k} for r in resumed.history]
    ) == json.dumps([{k: v for k, v in r.items() if "per_s" not in k} for r in reference.history])
    _assert_same_run(tmp_path / "cut", tmp_path / "full")
    assert (tmp_path / "cut" / "splits.csv").read_text() == (
        tmp_path / "full" / "splits.csv"
    ).read_text()


def test_resuming_needs_no_random_state_but_the_seed(folder_tree, tmp_path, monkeypatch):
    """Under torchrun the checkpoint holds rank 0's RNG states only, so every other rank resumes
    with states that are not its own: what an epoch draws must depend on the seed, the epoch
    and the rank alone."""
    train(_config(folder_tree), tmp_path / "full", progress=False)
    _train_interrupted_after_epoch_2(folder_tree, tmp_path / "cut", monkeypatch)
    load_last = epochs.load_last

    def load_then_lose_the_random_states(*args, **kwargs):
        loaded = load_last(*args, **kwargs)
        random.seed(1), np.random.seed(1), torch.manual_seed(1)  # as another rank would hold
        return loaded

    monkeypatch.setattr(epochs, "load_last", load_then_lose_the_random_states)
    train(Config(), tmp_path / "cut", resume=True, progress=False)

    _assert_same_run(tmp_path / "cut", tmp_path / "full")


def _saved_epoch(run: Path) -> int:
    try:
        return json.loads((run / "last" / "done.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not written yet, or mid-swap
        return 0


def _wait_for_checkpoint(run: Path, epoch: int, process: subprocess.Popen) -> float:
    deadline = time.monotonic() + 120
    while _saved_epoch(run) < epoch:
        assert process.poll() is None, (
            f"training exited ({process.returncode}) before epoch {epoch}"
        )
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} within 120 s"
        time.sleep(0.005)
    return time.monotonic()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_kill_9_at_a_random_moment_then_resume_from_the_cli(folder_tree, tmp_path):
    train(_config(folder_tree), tmp_path / "reference", progress=False)
    run = tmp_path / "run"
    sets = [x for item in SETTINGS for x in ("--set", item)]
    command = [sys.executable, "-m", "pictag", "train", "--images", str(folder_tree)]
    rng = random.Random()
    after = rng.randint(2, EPOCHS - 2)  # kill during epoch after + 1, with >= 2 epochs to go
    fraction = rng.random()
    with (tmp_path / "killed.log").open("w") as log:
        process = subprocess.Popen(
            [*command, "--out", str(run), *sets], stdout=log, stderr=subprocess.STDOUT, env=ENV
        )
        try:
            before = _wait_for_checkpoint(run, after - 1, process)
            epoch_seconds = _wait_for_checkpoint(run, after, process) - before
            # Anywhere in the next epoch: a training step, validation, or the checkpoint's save.
            time.sleep(fraction * epoch_seconds)
            assert process.poll() is None, "training ended before the kill"
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()  # a no-op when it is already dead; never leave it running
            process.wait(timeout=60)
    moment = f"killed {fraction:.2f} of an epoch after epoch {after} was saved"
    assert process.returncode == -signal.SIGKILL, moment

    resumed = subprocess.run(
        [sys.executable, "-m", "pictag", "train", "--resume", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )

    assert resumed.returncode == 0, f"{moment}\n{resumed.stderr[-3000:]}"
    assert f"epoch {EPOCHS}/{EPOCHS}" in resumed.stderr
    assert f"epoch 1/{EPOCHS}" not in resumed.stderr, "the resumed run started over"
    _assert_same_run(run, tmp_path / "reference")


@pytest.mark.parametrize("made", [True, False])
def test_resume_without_a_checkpoint_names_the_folder(tmp_path, capsys, made):
    run = tmp_path / "not-a-run"
    if made:
        run.mkdir()
        (run / "config.resolved.json").write_text('{"config": {}}')  # killed before epoch 1
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "nothing to resume" in err


def test_two_deterministic_runs_with_amp_auto_agree_and_store_the_precision(folder_tree, tmp_path):
    """``amp: auto`` is decided from the CPU's flags, so two runs (and a resumed one, which reads
    the stored setting) compute in the same precision and give the same numbers."""
    from pictag.training.runtime import amp_setting, choose_amp_dtype

    settings = [*SETTINGS, "train.amp=auto", "train.epochs=2"]
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train(load_config(overrides=[f"data.images={folder_tree}", *settings]), run)
    assert _history(runs[0]) == _history(runs[1])
    chosen = amp_setting(choose_amp_dtype(torch.device("cpu"), "auto"))
    for run in runs:
        stored = json.loads((run / "pictag.json").read_text())["config"]["train"]["amp"]
        assert stored == chosen
