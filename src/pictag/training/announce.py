"""What ``pictag train`` tells the user: the plan before any work, the time it will take once the
first steps are timed (with a faster choice when that is long), each epoch, and the result.

A new user's first run should never be a silent 40-minute wait: the first lines name the
backbone, image size, mode, epochs and device, and the estimate follows within a few steps.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from pictag.config import Config
from pictag.data.pipeline import PreparedData
from pictag.heads import get_kind
from pictag.training.runtime import precision_text

log = logging.getLogger(__name__)

LONG_RUN_S = 10 * 60  # an estimate above this comes with a faster choice
TIMED_STEPS = 3  # steps timed after the first (warm-up) step before estimating


def plan_lines(config: Config, data: PreparedData, input_size: int, device: str) -> list[str]:
    """The run's plan: model, input, mode, epochs, optimizer, data and device, in three lines."""
    model, train = config.model, config.train
    pretrained = "from scratch" if model.pretrained == "none" else f"{model.pretrained} weights"
    epochs = "" if train.mode == "linear-probe" else f", {train.epochs} epochs"
    if epochs and train.epoch_images > 0:
        epochs += f" of {train.epoch_images} images"
    optimizer = f"{train.optimizer} lr {train.lr:g} (backbone x{train.backbone_lr_scale:g})"
    sizes = ", ".join(f"{split} {len(samples)}" for split, samples in data.splits.items())
    heads = ", ".join(
        f"{name} ({head.kind}, {head.num_labels} label{'' if head.num_labels == 1 else 's'})"
        for name, head in data.heads.items()
    )
    notes = [
        get_kind(head.kind).plan_note(head, config.heads.get(name))
        for name, head in data.heads.items()
    ]
    if not data.splits.get("test"):
        # `pictag evaluate` then scores val, the images that chose the model and tuned its
        # thresholds: an optimistic score, which a user should know of before training.
        notes.append(
            "no test split: pictag evaluate will score the validation images, which choose the "
            "model and its thresholds (optimistic); hold test images out with "
            "data.test_fraction=0.2 (images without a split), a split column or a test folder"
        )
    return [
        f"model: {model.backbone}, {pretrained}, {input_size} px, {train.mode}{epochs}, "
        f"batch {train.batch_size}, {optimizer}",
        f"data: {sizes} images; heads: {heads}",
        f"device: {device}",
        *(note for note in notes if note),
    ]


def step_timer(
    config: Config, data: PreparedData, input_size: int, say: Callable[[str], None] = log.info
) -> Callable[[int, int, float], None]:
    """A callback for the first epoch's steps, ``(step, images, seconds)``, that prints the
    estimated training time once ``TIMED_STEPS`` steps after the first have been timed."""
    state: dict[str, Any] = {"done": False}

    def on_step(step: int, images: int, seconds: float) -> None:
        if state["done"]:
            return
        if step == 0:  # the first step pays for warm-up and memory allocation: not timed
            state["start"], state["images"] = seconds, images
            return
        if step < TIMED_STEPS:
            return
        state["done"] = True
        rate = (images - state["images"]) / max(seconds - state["start"], 1e-9)
        for line in estimate_lines(config, data, input_size, rate):
            say(line)

    return on_step


def estimate_lines(
    config: Config, data: PreparedData, input_size: int, images_per_s: float
) -> list[str]:
    """The estimated time of the fine-tuning epochs at ``images_per_s``, and a faster choice
    when the whole run would take longer than ``LONG_RUN_S``."""
    train_images = len(data.splits.get("train", []))
    if config.train.epoch_images > 0:  # an epoch draws that many of them
        train_images = min(train_images, config.train.epoch_images)
    epoch_s = train_images / max(images_per_s, 1e-9)
    total_s = epoch_s * config.train.epochs
    lines = [
        f"speed: {images_per_s:.1f} img/s -> about {duration(epoch_s)} per epoch, "
        f"{duration(total_s)} for {config.train.epochs} epochs (plus validation)"
    ]
    if total_s > LONG_RUN_S:
        lines += [f"  faster: {hint}" for hint in faster_choices(config, data, input_size)]
    return lines


def faster_choices(config: Config, data: PreparedData, input_size: int) -> list[str]:
    """Settings that cut a long run's time, most effective first, for this data and model."""
    hints = []
    side = _median_side(data)
    if side is not None and side * 2 <= input_size:
        small = max(16, 2 ** math.ceil(math.log2(side)))
        hints.append(
            f"the images are about {side} px but the model sees {input_size} px: "
            f"--set model.image_size={small} (or model.backbone=small_cnn, trained from "
            "scratch, for tiny images such as digits)"
        )
    if config.model.pretrained != "none" and config.train.mode != "linear-probe":
        hints.append(
            "--set train.mode=linear-probe: computes the pretrained features once and fits "
            "the heads in seconds (often close to fine-tuning on photos)"
        )
    if config.train.budget == "off":
        hints.append("--set train.budget=10m: as many epochs as fit in 10 minutes")
    if config.train.epochs > 3:
        hints.append(f"--set train.epochs=3 (now {config.train.epochs})")
    return hints


def epoch_line(
    epoch: int, epochs: int, fit: dict[str, float], val: dict[str, float], seconds: float
) -> str:
    """One epoch's losses, labelled, and its time: ``epoch 3/10 (41 s, 250 img/s): train loss
    0.4120 | val loss 0.3980``; the validation metrics follow (see :func:`metrics_text`)."""
    rate = fit.get("images_per_s", math.nan)
    return (
        f"epoch {epoch}/{epochs} ({duration(seconds)}, {rate:.0f} img/s): train loss "
        f"{fit.get('loss', math.nan):.4f} | val loss {val.get('loss', math.nan):.4f}"
    )


def metrics_text(metrics: dict[str, float], keys: list[str]) -> str:
    """``key value`` for each of ``keys`` that ``metrics`` holds as a number."""
    shown = {key: metrics[key] for key in keys if isinstance(metrics.get(key), float)}
    return " ".join(f"{key} {value:.4f}" for key, value in shown.items())


def result_line(best_epoch: int, best_score: float, epochs_run: int, run_dir: Any) -> str:
    """The chosen model: the linear probe (``best_epoch`` 0) or a fine-tuning epoch."""
    if best_epoch == 0:
        after = f" (none of {epochs_run} fine-tuning epochs beat it)" if epochs_run else ""
        return f"best: the probe{after}, score {best_score:.4f} -> {run_dir}"
    return f"best: epoch {best_epoch} of {epochs_run}, score {best_score:.4f} -> {run_dir}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min``, ``1 h 20 min``: rounded as an estimate should be."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _median_side(data: PreparedData) -> int | None:
    sizes = data.report.image_sizes
    if not sizes:
        return None
    return int(statistics.median(min(w, h) for w, h in sizes))


def summary_keys(kinds: dict[str, Any]) -> list[str]:
    """``score`` and each head's summary metrics (``HEAD/METRIC``), as epoch lines show them."""
    keys = ["score"]
    for name, kind in kinds.items():
        keys += [f"{name}/{metric}" for metric in kind.summary_metrics]
    return keys


def device_text(runtime: Any, amp: str = "auto") -> str:
    """``cpu, fp32 (CPU without native bf16), 2 CPU threads``: where and how the run computes,
    and why in that precision (``amp``: the ``train.amp`` asked for)."""
    precision = precision_text(runtime, amp)
    ranks = f", {runtime.world_size} processes" if runtime.distributed else ""
    return f"{runtime.device}, {precision}, {torch.get_num_threads()} CPU threads{ranks}"
