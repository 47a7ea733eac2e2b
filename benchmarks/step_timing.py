"""The two sides that ``pipeline_efficiency.py`` compares, and a profiler of one of them.

* :func:`plain_step`: forward + loss + backward + AdamW step of the model pictag would build, on
  one random batch already in memory -- the ceiling that no input pipeline can beat.
* :class:`PictagEpochs`: pictag's own training epoch (its loaders with the decode-once cache, its
  objective, optimizer, schedule and ``train_one_epoch``), the same code ``pictag train`` runs
  each epoch, so it can be interleaved with plain blocks under the same CPU load.
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bench_utils import LoadMeter
from pictag.config import Config
from pictag.data.pipeline import prepare_data
from pictag.data.schema import Head
from pictag.run import build_model
from pictag.training.loaders import make_loaders
from pictag.training.loop import train_one_epoch
from pictag.training.optim import build_optimizer, build_scheduler, freeze_batchnorm
from pictag.training.runtime import setup_runtime
from pictag.training.trainer import make_objective

# Where a step's time goes: the function that enters each part, as (file suffix, name).
PARTS = {
    "data (DataLoader __next__)": ("dataloader.py", "__next__"),
    "transforms (v2.Compose)": ("_container.py", "forward"),
    "collate": ("collate.py", "default_collate"),
    "forward (Classifier)": ("classifier.py", "forward"),
    "backward": ("graph.py", "_engine_run_backward"),
    "optimizer step": ("optimizer.py", "wrapper"),
}


def _frozen_bn(config: Config) -> bool:
    return config.model.pretrained != "none" and config.train.freeze_bn


def plain_step(config: Config, heads: dict[str, Head]) -> Callable[[], None]:
    """One training step on a fixed random batch, with the model pictag builds for ``config``
    (same backbone, heads, weights, channels_last, BatchNorm frozen as pictag freezes it)."""
    train_cfg = config.train
    model, pre = build_model(config.model, heads, config.heads)
    model.train()
    if _frozen_bn(config):
        freeze_batchnorm(model)
    fmt = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=train_cfg.weight_decay)
    batch = train_cfg.batch_size
    images = torch.randn(batch, *pre.input_size).contiguous(memory_format=fmt)
    targets = {
        name: torch.randint(0, head.num_labels, (batch,))
        if head.kind == "multiclass"
        else torch.randint(0, 2, (batch, head.num_labels)).float()
        for name, head in heads.items()
    }

    def step() -> None:
        logits = model(images)
        loss = sum(
            F.cross_entropy(out, targets[name])
            if heads[name].kind == "multiclass"
            else F.binary_cross_entropy_with_logits(out, targets[name])
            for name, out in logits.items()
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def warm_up(step: Callable[[], None], steps: int = 3, seconds: float = 2.0) -> None:
    """Run until oneDNN has built its kernels: ``steps`` steps and ``seconds`` at least."""
    start, done = time.perf_counter(), 0
    while done < steps or time.perf_counter() - start < seconds:
        step()
        done += 1


def time_plain(step: Callable[[], None], steps: int, batch_size: int) -> dict[str, Any]:
    """Images/s of ``steps`` plain steps, with the CPU share other processes took meanwhile."""
    with LoadMeter() as meter:
        for _ in range(steps):
            step()
    return {"images_per_s": round(steps * batch_size / meter.wall_s, 2), **meter.to_dict()}


class PictagEpochs:
    """pictag's training epoch for ``config``, built as the trainer builds it."""

    def __init__(self, config: Config) -> None:
        config = copy.deepcopy(config)
        self.config = config
        self.runtime = setup_runtime("cpu", config.train.amp)
        data = prepare_data(config, None, decode=False, progress=False)
        self.model, pre = build_model(config.model, data.heads, config.heads)
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        start = time.perf_counter()
        self.loaders = make_loaders(data, pre, config, self.runtime, progress=False)
        self.cache_build_s = time.perf_counter() - start  # train + val image caches
        self.objective = make_objective(config, data)
        self.optimizer = build_optimizer(self.model, config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train, len(self.loaders.train))
        self.prepare = freeze_batchnorm if _frozen_bn(config) else None

    def run(self, epoch: int) -> dict[str, Any]:
        """One epoch; ``images_per_s`` as ``pictag train`` reports it, plus the CPU load."""
        self.loaders.set_epoch(epoch)
        with LoadMeter() as meter:
            fit = train_one_epoch(
                self.model, self.loaders.train, self.objective, self.optimizer, self.scheduler,
                self.runtime, epoch=epoch, channels_last=self.config.train.channels_last,
                prepare=self.prepare, progress=False,
            )  # fmt: skip
        return {"images_per_s": round(fit["images_per_s"], 2), **meter.to_dict()}

    def alternate_batches(self, step: Callable[[], None]) -> dict[str, Any]:
        """One pass over pictag's training loader, alternating batch by batch between fetching
        a batch (with the channels-last copy the loop makes) and one plain step, so that both
        are timed under the same load; the ratio a loop without other overhead would reach is
        ``step / (step + data)``."""
        data_s = step_s = 0.0
        seen = 0
        batches = iter(self.loaders.train)
        with LoadMeter() as meter:
            while True:
                start = time.perf_counter()
                try:
                    images, _ = next(batches)
                except StopIteration:
                    break
                if self.config.train.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                fetched = time.perf_counter()
                step()
                data_s += fetched - start
                step_s += time.perf_counter() - fetched
                seen += images.shape[0]
        return {
            "data_ms_per_image": round(1e3 * data_s / seen, 3),
            "step_ms_per_image": round(1e3 * step_s / seen, 3),
            "ratio": round(step_s / (step_s + data_s), 3),
            **meter.to_dict(),
        }

    def data_only(self) -> float:
        """Images/s of the training loader alone (cache read, augmentation, collation)."""
        start, seen = time.perf_counter(), 0
        for images, _ in self.loaders.train:
            seen += images.shape[0]
        return seen / (time.perf_counter() - start)


def profile(fn: Callable[[], Any], top: int = 20) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` under cProfile; return its result and where the time went."""
    profiler = cProfile.Profile()
    result = profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    total = max(stats.total_tt, 1e-9)
    parts = {}
    for label, (suffix, func) in PARTS.items():
        seconds = sum(
            row[3]
            for (path, _, name), row in stats.stats.items()  # type: ignore[attr-defined]
            if path.endswith(suffix) and name == func
        )
        parts[label] = {"seconds": round(seconds, 2), "share": round(seconds / total, 3)}
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    first = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    table = [line.strip() for line in lines[first:] if line.strip()]
    return result, {"profiled_s": round(total, 2), "parts": parts, "top_by_tottime": table}
