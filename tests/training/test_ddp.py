"""``torchrun --nproc_per_node=2 -m pictag train`` on the CPU (gloo) trains the same model as one
process with twice the batch, and only rank 0 writes the run folder.

Why the two runs can agree to float rounding: ``train.batch_size`` is per process and every rank
draws the same per-epoch permutation, rank r taking ``order[r::2]``, so step k of 2 ranks x 4
images covers the same 8 images as step k of 1 process x 8, and DistributedDataParallel averages
the two half-batch mean gradients into the full-batch mean. What is left to differ is float
summation order (the gradient all-reduce, per-shard losses, the gathered validation set) and the
thread count (torchrun runs each rank on one thread). BatchNorm would add a real difference
(each rank normalises its 4 images with their own statistics; SyncBatchNorm does not run on
CPUs), so the comparison uses timm's ``test_efficientnet_gn``, a ~100k-parameter network with
GroupNorm, with dropout off and no augmentation.

Tolerance: relative 1e-4 (absolute 1e-6 near zero). Measured: the largest relative difference
over every train and validation metric after 2 epochs is 4e-8, a few float32 ulps. A real
mismatch is orders of magnitude larger: rank 1 keeping an EMA of its own initial weights moved
the validation loss by 18 %, and a different batch or a summed instead of averaged gradient
changes every step; 1e-4 leaves room for other BLAS builds and thread counts.

A second launch trains ``small_cnn`` (BatchNorm) and checks that the saved model, evaluated in
one process, gives the validation metrics the ranks logged together: each rank must validate
the model rank 0 saves. Measured: 5e-8 relative with the ranks' BatchNorm statistics averaged
after each epoch, 5e-5 without (rank 1 validated with its own); the test allows 1e-6.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from pictag.config import load_config
from pictag.data.dataset import ImageDataset
from pictag.data.pipeline import prepare_data
from pictag.data.transforms import eval_transform
from pictag.run import load_run
from pictag.training.loop import validate
from pictag.training.runtime import Runtime
from pictag.training.trainer import make_objective, train

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

COMMON = [
    "model.pretrained=none",
    "model.image_size=16",
    "model.drop_rate=0",
    "data.val_fraction=0.25",
    "train.lr=0.01",
    "train.warmup_epochs=0",
    "train.augment=none",
    "train.epochs=2",
    "train.deterministic=true",
    "train.workers=0",
    "train.device=cpu",
    "train.amp=off",
    # Frozen backbone in epoch 1 and an EMA copy: DDP must be rebuilt when the backbone thaws,
    # and every rank's EMA must start from rank 0's initial weights.
    "train.freeze_epochs=1",
    "train.ema=0.9",
]
RUN_FILES = {
    "config.resolved.json",
    "last",
    "metrics.csv",
    "metrics.jsonl",
    "model.safetensors",
    "pictag.json",
    "splits.csv",
    "val_outputs.safetensors",
}


def _torchrun(images: Path, out: Path, settings: list[str]) -> subprocess.CompletedProcess:
    sets = [x for item in settings for x in ("--set", item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "pictag", "train", "--images", str(images), "--out", str(out), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _splits(run: Path) -> list[str]:
    return (run / "splits.csv").read_text().splitlines()


def _assert_close(got: float, want: float, key: str) -> None:
    if want is None:  # an undefined metric (NaN, written as null)
        assert got is None, key
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), key
    else:
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), key


def _assert_written_once_by_rank_0(run: Path, splits_of: Path, epochs: int) -> None:
    names = {p.name for p in run.iterdir()}
    # No second writer's leftovers: temporary files, half-swapped checkpoints, a second log.
    assert names - {"tensorboard"} == RUN_FILES, names
    if "tensorboard" in names:
        assert len(list((run / "tensorboard").iterdir())) == 1
    assert [r["epoch"] for r in _history(run)] == list(range(1, epochs + 1))
    lines = _splits(run)
    assert lines.count("image,split") == 1 and len(set(lines)) == len(lines)
    assert sorted(lines) == sorted(_splits(splits_of))
    assert {p.name for p in (run / "last").iterdir()} >= {"model.safetensors", "done.json"}
    run_model = load_run(run).model
    assert run_model(torch.zeros(2, 3, 16, 16))["label"].shape == (2, 3)


def test_two_ranks_match_one_process_with_twice_the_batch(folder_tree, tmp_path):
    settings = ["model.backbone=test_efficientnet_gn", *COMMON]
    config = load_config(overrides=[f"data.images={folder_tree}", "train.batch_size=8", *settings])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank; keeps summation order closer, and fast
    try:
        single = train(config, tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    train_size = sum(line.endswith(",train") for line in _splits(tmp_path / "single"))
    # 1 x 8 and 2 x 4 then take the same number of full batches (no padded last step).
    assert train_size // 8 == -(-train_size // 2) // 4, train_size

    _torchrun(folder_tree, tmp_path / "ddp", ["train.batch_size=4", *settings])

    ddp_history, single_history = _history(tmp_path / "ddp"), _history(tmp_path / "single")
    assert len(ddp_history) == len(single_history) == 2
    for ddp, one in zip(ddp_history, single_history, strict=True):
        assert ddp.keys() == one.keys()
        for key in one.keys() - {"train/images_per_s", "epoch"}:
            _assert_close(ddp[key], one[key], f"epoch {one['epoch']} {key}")
    meta = json.loads((tmp_path / "ddp" / "pictag.json").read_text())
    assert meta["epoch"] == single.best_epoch
    for key, value in single.metrics.items():
        _assert_close(meta["metrics"][key], value, key)
    _assert_written_once_by_rank_0(tmp_path / "ddp", tmp_path / "single", epochs=2)


def _evaluate_in_one_process(run: Path) -> dict[str, float]:
    """The saved model's validation metrics, computed here from the run's own split."""
    loaded = load_run(run)
    config = loaded.config
    config.data.split_file = str(run / "splits.csv")
    data = prepare_data(config, progress=False)
    dataset = ImageDataset(
        data.splits["val"], data.heads, loaded.preprocess, eval_transform(loaded.preprocess)
    )
    loader = DataLoader(dataset, batch_size=8)
    objective = make_objective(config, data)
    return validate(loaded.model, loader, objective, Runtime(torch.device("cpu"))).metrics


def test_batchnorm_ranks_validate_the_model_rank_0_saves(folder_tree, tmp_path):
    # Without EMA: the EMA's averaging would blur the ranks' different statistics.
    settings = ["model.backbone=small_cnn", "train.batch_size=4", "train.monitor=loss", *COMMON]
    settings.append("train.ema=0")
    _torchrun(folder_tree, tmp_path / "ddp", settings)

    logged = json.loads((tmp_path / "ddp" / "pictag.json").read_text())["metrics"]
    recomputed = _evaluate_in_one_process(tmp_path / "ddp")
    assert recomputed.keys() == logged.keys()
    for key, value in logged.items():
        if value is None or math.isnan(value):  # an undefined metric
            assert math.isnan(recomputed[key]), key
            continue
        assert recomputed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
