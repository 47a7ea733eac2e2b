"""Resumable checkpoints: exact restore (RNG states included), resume equivalence, and a
complete checkpoint on disk whatever moment a save is killed at."""

from __future__ import annotations

import copy
import math
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pictag.fileio import umask
from pictag.training import checkpoint
from pictag.training.checkpoint import has_last, load_last, save_last


class TinyNet(nn.Module):
    """Conv + BatchNorm (buffers) + dropout (draws from torch's RNG) + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x)).relu().mean((2, 3))))


def make(optimizer: str = "adamw", schedule: str = "lambda", total_steps: int = 12):
    model = TinyNet()
    groups = [  # named groups, as pictag.training.optim builds them
        {"name": "body", "params": [*model.conv.parameters(), *model.bn.parameters()]},
        {"name": "head", "params": list(model.fc.parameters()), "weight_decay": 0.0},
    ]
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=0.01)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total_steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 / (1 + step))
    return model, opt, sched


def train_epoch(model, opt, sched, ema=None, steps: int = 3) -> None:
    """A few steps on data drawn from torch, NumPy and Python RNGs in turn."""
    model.train()
    for _ in range(steps):
        x = torch.randn(6, 3, 5, 5) + torch.from_numpy(np.random.rand(6, 3, 5, 5)).float()
        y = torch.tensor([random.randrange(3) for _ in range(6)])
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for avg, param in zip(ema.parameters(), model.parameters(), strict=True):
                    avg.lerp_(param, 0.5)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draws() -> tuple:
    """The next values of every global RNG, cached Gaussians included."""
    return (
        torch.rand(4),
        np.random.rand(4),
        random.random(),
        random.gauss(0, 1),
        np.random.standard_normal(),
    )


def assert_same_draws(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2:] == b[2:]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_load_restores_weights_optimizer_scheduler_scaler_extra_and_rng(tmp_path: Path) -> None:
    seed_all(0)
    model, opt, sched = make("adamw")
    ema = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(2):
        train_epoch(model, opt, sched, ema)
    random.gauss(0, 1)  # leave a cached Gaussian in Python's and NumPy's state
    np.random.standard_normal()
    extra = {
        "best_score": -math.inf,
        "bad_epochs": 1,
        "history": [{"epoch": 1, "val/score": np.float64(0.25), "note": "first"}],
    }
    save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=2, extra=extra,
              ema=ema, scaler=scaler)  # fmt: skip
    after_save = draws()
    saved_opt = copy.deepcopy(opt.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == [
        "done.json", "ema.safetensors", "model.safetensors", "state.pt"
    ]  # fmt: skip

    seed_all(99)
    model2, opt2, sched2 = make("adamw")
    ema2 = copy.deepcopy(model2)
    scaler2 = torch.amp.GradScaler("cpu", init_scale=2.0)
    train_epoch(model2, opt2, sched2)
    assert not torch.equal(model2.fc.weight, model.fc.weight)
    epoch, got = load_last(tmp_path, model=model2, optimizer=opt2, scheduler=sched2, ema=ema2,
                           scaler=scaler2)  # fmt: skip

    assert_same_draws(draws(), after_save)
    assert epoch == 2
    assert got == {**extra, "history": [{"epoch": 1, "val/score": 0.25, "note": "first"}]}
    assert type(got["history"][0]["val/score"]) is float
    assert_same_weights(model2, model)
    assert_same_weights(ema2, ema)
    state2 = opt2.state_dict()
    assert state2["param_groups"] == saved_opt["param_groups"]
    for index, moments in saved_opt["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state2["state"][index][key], moments[key]), key
    assert sched2.last_epoch == sched.last_epoch == 6
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert scaler2.get_scale() == 1024.0


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "lambda"), ("adamw", "onecycle")])
def test_interrupted_then_resumed_run_ends_with_the_same_weights(
    tmp_path: Path, optimizer: str, schedule: str
) -> None:
    seed_all(0)
    straight, opt, sched = make(optimizer, schedule)
    straight_ema = copy.deepcopy(straight)
    for _ in range(4):
        train_epoch(straight, opt, sched, straight_ema)

    seed_all(0)
    model, opt, sched = make(optimizer, schedule)
    ema = copy.deepcopy(model)
    for _ in range(2):
        train_epoch(model, opt, sched, ema)
    save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=2, extra={}, ema=ema)

    seed_all(7)  # a new process: other RNG states, other initial weights, fresh objects
    model, opt, sched = make(optimizer, schedule)
    ema = copy.deepcopy(model)
    start, _ = load_last(tmp_path, model=model, optimizer=opt, scheduler=sched, ema=ema)
    for _ in range(start, 4):
        train_epoch(model, opt, sched, ema)

    assert start == 2
    assert_same_weights(model, straight)
    assert_same_weights(ema, straight_ema)


def save_filled(run_dir: Path, epoch: int) -> None:
    """A checkpoint whose weights and extra both say ``epoch``, to tell checkpoints apart."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(epoch)
    save_last(run_dir, model=model, optimizer=opt, scheduler=sched, epoch=epoch,
              extra={"epoch": epoch})  # fmt: skip


def load_filled(run_dir: Path, features: tuple[int, int] = (4, 2)) -> int:
    """Load a :func:`save_filled` checkpoint; check its files belong together; return its epoch."""
    model = nn.Linear(*features)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    epoch, extra = load_last(run_dir, model=model, optimizer=opt, scheduler=sched)
    assert extra == {"epoch": epoch}
    assert all(bool((param == epoch).all()) for param in model.parameters())
    return epoch


def complete_folder_elsewhere(tmp_path: Path, epoch: int) -> Path:
    """A complete checkpoint folder of ``epoch``, built in another run folder."""
    other = tmp_path / f"other-{epoch}"
    save_filled(other, epoch)
    return other / "last"


def test_kill_between_the_two_renames_falls_back_to_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    save_filled(run, 1)
    # The state a kill leaves between `last` -> `.last-old` and temp -> `last`.
    os.rename(run / "last", run / ".last-old")
    os.rename(complete_folder_elsewhere(tmp_path, 2), run / ".last-tmp-killed")

    assert has_last(run)
    assert load_filled(run) == 1
    save_filled(run, 3)
    assert sorted(p.name for p in run.iterdir()) == ["last"]
    assert load_filled(run) == 3


def test_kill_after_the_second_rename_loads_the_new_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_filled(run, 1)
    os.rename(run / "last", run / ".last-old")
    os.rename(complete_folder_elsewhere(tmp_path, 2), run / "last")

    assert load_filled(run) == 2
    save_filled(run, 3)
    assert sorted(p.name for p in run.iterdir()) == ["last"]
    assert load_filled(run) == 3


class Killed(BaseException):
    """Stands for a kill: nothing after it runs (but ``finally`` blocks do)."""


@pytest.mark.parametrize("killed_at_rename", [1, 2])
def test_save_stopped_at_either_rename_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at_rename: int
) -> None:
    save_filled(tmp_path, 1)
    calls = []
    real_rename = os.rename

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == killed_at_rename:
            raise Killed
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(Killed):
        save_filled(tmp_path, 2)
    monkeypatch.undo()

    assert calls[0] == ("last", ".last-old")
    assert load_filled(tmp_path) == 1
    save_filled(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_filled(tmp_path) == 3


def test_save_after_a_kill_between_renames_keeps_the_fallback_until_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_filled(tmp_path, 1)
    os.rename(tmp_path / "last", tmp_path / ".last-old")  # an earlier save killed mid-swap

    def rename(src, dst):
        raise Killed

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(Killed):
        save_filled(tmp_path, 2)
    monkeypatch.undo()
    assert load_filled(tmp_path) == 1


def test_stale_temp_folder_is_ignored_and_removed_by_the_next_save(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_filled(run, 1)
    os.rename(complete_folder_elsewhere(tmp_path, 9), run / ".last-tmp-stale")

    assert load_filled(run) == 1
    save_filled(run, 2)
    assert not (run / ".last-tmp-stale").exists()
    assert load_filled(run) == 2


def test_incomplete_folders_are_never_loaded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    partial = complete_folder_elsewhere(tmp_path, 5)
    (partial / "done.json").unlink()  # written last: a temp folder killed before it
    os.rename(partial, run / ".last-tmp-partial")
    assert not has_last(run)
    with pytest.raises(FileNotFoundError):
        load_filled(run)

    # A `last` whose state.pt is not the one done.json describes is not used either.
    save_filled(run, 1)
    os.rename(run / "last", run / ".last-old")
    os.rename(complete_folder_elsewhere(tmp_path, 2), run / "last")
    with open(run / "last" / "state.pt", "r+b") as handle:
        handle.truncate(10)
    assert load_filled(run) == 1


def test_missing_checkpoint_names_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "never-trained"
    assert not has_last(run)
    with pytest.raises(FileNotFoundError, match=re.escape(str(run))):
        load_filled(run)


class Warmup:
    """A callable-object lambda: LambdaLR saves its ``__dict__``, function included."""

    def __init__(self) -> None:
        self.steps = 3
        self.curve = math.sqrt

    def __call__(self, step: int) -> float:
        return self.curve(min(1.0, (step + 1) / self.steps))


def test_functions_in_scheduler_state_are_dropped_and_kept_by_the_loading_scheduler(
    tmp_path: Path,
) -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, Warmup())
    for _ in range(2):
        opt.step()
        sched.step()
    save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=1, extra={})

    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, Warmup())
    load_last(tmp_path, model=model, optimizer=opt2, scheduler=sched2)
    assert sched2.last_epoch == 2
    assert sched2.lr_lambdas[0].curve is math.sqrt
    assert opt2.param_groups[0]["lr"] == pytest.approx(1.0)


def test_unsafe_extra_is_refused_before_the_previous_checkpoint_is_touched(
    tmp_path: Path,
) -> None:
    save_filled(tmp_path, 1)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with pytest.raises(TypeError, match=re.escape("['history'][0]['metric']")):
        save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=2,
                  extra={"history": [{"metric": object()}]})  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_filled(tmp_path) == 1


def test_resuming_with_ema_needs_ema_weights(tmp_path: Path) -> None:
    save_filled(tmp_path, 1)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with pytest.raises(ValueError, match="EMA"):
        load_last(tmp_path, model=model, optimizer=opt, scheduler=sched, ema=copy.deepcopy(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_state_is_restored(tmp_path: Path) -> None:
    model = nn.Linear(4, 2).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4, device="cuda")).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=1, extra={})
    expected = torch.rand(5, device="cuda")
    torch.rand(7, device="cuda")
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    load_last(tmp_path, model=model, optimizer=opt2, scheduler=sched)
    assert torch.equal(torch.rand(5, device="cuda"), expected)
    assert opt2.state_dict()["state"][0]["exp_avg"].device.type == "cuda"


# Imports torch and builds the objects once, then forks savers and kills each with SIGKILL a
# random moment after its first finished save: several kills for the cost of one torch import.
# One thread, so no OpenMP pool exists to break in the forked children. Prints each run folder
# and the last epoch whose save had finished.
DRIVER = """
import os, random, signal, sys, time
import torch
from torch import nn
from pictag.training.checkpoint import save_last

torch.set_num_threads(1)
model = nn.Linear(256, 256)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)

def save_forever(run_dir, ack):
    epoch = 0
    while True:
        epoch += 1
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(epoch)
        save_last(run_dir, model=model, optimizer=opt, scheduler=sched, epoch=epoch,
                  extra={"epoch": epoch})
        os.write(ack, epoch.to_bytes(4, "little"))

for run_dir in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            save_forever(run_dir, write)
        finally:
            os._exit(1)
    os.close(write)
    acks = os.read(read, 4)
    assert acks, "the saver died before its first save"
    time.sleep(random.uniform(0.0, 0.05))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(read, 65536):
        acks += chunk
    os.close(read)
    print(run_dir, int.from_bytes(acks[-4:], "little"), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    src = str(Path(checkpoint.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    runs = [str(tmp_path / f"run{i}") for i in range(8)]
    done = subprocess.run([sys.executable, "-c", DRIVER, *runs], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    acknowledged = dict(line.split() for line in done.stdout.splitlines())
    assert sorted(acknowledged) == runs
    for run, last_finished in acknowledged.items():
        epoch = load_filled(Path(run), features=(256, 256))
        assert epoch >= int(last_finished)  # a finished save is never lost
        save_filled(Path(run), epoch + 1)  # the next save clears what the kill left
        assert sorted(p.name for p in Path(run).iterdir()) == ["last"]


def test_the_checkpoint_is_as_readable_as_the_users_other_files(tmp_path: Path) -> None:
    model, opt, sched = make("adamw")
    save_last(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=1, extra={})
    last = tmp_path / "last"
    assert stat.S_IMODE(last.stat().st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700
    for name in ("model.safetensors", "state.pt", "done.json"):
        assert stat.S_IMODE((last / name).stat().st_mode) == 0o666 & ~umask(), name
