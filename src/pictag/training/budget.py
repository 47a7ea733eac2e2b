"""``train.budget``: a run planned to finish within a wall-clock time on this machine.

The linear probe runs first (cheap, and always a usable model); then a few training steps are
timed and the run takes as many fine-tune epochs as the time left allows (at most
``train.epochs``), so the learning-rate schedule completes within the budget instead of being
cut off half-way. When not one whole epoch fits, the run fine-tunes for one epoch of the
images that do (``train.epoch_images``, a random draw), its schedule planned to end within it.
After each epoch the run stops early if the next one would overrun, and within an epoch when
what is left only covers the validation pass (the plan's timed steps can overestimate the
speed).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pictag.training.announce import duration
from pictag.training.loop import Objective, to_device
from pictag.training.runtime import Runtime

log = logging.getLogger(__name__)

# A validation pass runs forward only: about a third of a training step's work per image.
EVAL_COST = 1 / 3
# What the timed steps do not see: the checkpoint written after every epoch, an epoch's start,
# timing noise. On oxford-pets-3 (Lite0, 2 cores) epochs took 38.5 s against 34 s planned from
# the steps, and the run had to stop one epoch short of its plan, its schedule unfinished.
EPOCH_MARGIN = 1.15
# train.patience of a budgeted fine-tune after a probe: the epochs in a row that may validate no
# better than the best so far before the run ends, keeping it. On oxford-pets-3 all 8 planned
# epochs validated at or below the probe (the budget spent for nothing); on miml-scenes the
# first epoch lost to the probe and the second won, so one losing epoch must not end a run.
AUTO_PATIENCE = 3


@dataclass
class Budget:
    """A wall-clock budget that started counting when the run began (data checks included).

    Attributes:
        seconds: The budget; None for no budget.
        started: ``time.perf_counter()`` at the start.
    """

    seconds: float | None
    started: float = field(default_factory=time.perf_counter)

    @property
    def active(self) -> bool:
        return self.seconds is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def spare(self) -> float:
        """What is left once the reserve for the end of the run is kept back."""
        return self.left() - reserve_seconds(self.seconds or 0.0)


# The least part of an epoch worth fine-tuning for when a whole one does not fit. On utkface-5k
# (Lite0 after the probe) a third of an epoch (~35 steps) validated at or below the probe
# twice (score 0.692 and 0.703 vs 0.703), six tenths (65 steps) above it (0.710); and the
# validation pass after a part costs as much as after a whole epoch.
MIN_PART = 0.5
MIN_STEPS = 4


@dataclass(frozen=True)
class EpochPlan:
    """How many fine-tune epochs fit, of how many images each, and the measured cost they were
    planned from."""

    epochs: int
    epoch_s: float
    images_per_s: float
    images: int

    def part(self, train_images: int) -> bool:
        """Whether the epochs draw fewer images than the training set holds."""
        return 0 < self.images < train_images


def plan_epochs(
    left_s: float,
    max_epochs: int,
    train_images: int,
    val_images: int,
    images_per_s: float,
    at_least_one: bool,
    batch_size: int = 1,
) -> EpochPlan:
    """The number of epochs (train pass + validation pass each) that fit in ``left_s``.

    When not one whole epoch fits, one epoch of the images that do fit (a random draw of the
    training set), if that is at least :data:`MIN_PART` of it and :data:`MIN_STEPS` batches.

    Args:
        left_s: Seconds left in the budget.
        max_epochs: ``train.epochs``, never exceeded.
        train_images: Images per training epoch.
        val_images: Images per validation pass.
        images_per_s: Measured training speed.
        at_least_one: Plan one epoch even when none fits (a run from scratch has no probe to
            fall back on): of the images that fit, but never under the least part above.
        batch_size: Images per step.
    """
    speed = max(images_per_s, 1e-9)
    epoch_s = epoch_seconds(train_images, val_images, speed)
    fit = min(max_epochs, int(max(left_s, 0.0) // epoch_s))
    if fit >= 1:
        return EpochPlan(fit, epoch_s, images_per_s, train_images)
    least = least_part(train_images, batch_size)
    images = int(max(left_s, 0.0) / EPOCH_MARGIN * speed - EVAL_COST * val_images)
    if images < least and not at_least_one:
        return EpochPlan(0, epoch_s, images_per_s, train_images)
    images = min(train_images, max(images, least))
    if images < train_images:  # whole batches: the loader drops a last partial one
        images = max(batch_size, images // batch_size * batch_size)
    return EpochPlan(1, epoch_seconds(images, val_images, speed), images_per_s, images)


def epoch_seconds(train_images: int, val_images: int, images_per_s: float) -> float:
    """The planned time of an epoch: a training pass over ``train_images`` and a validation
    pass over ``val_images`` at ``images_per_s``, with the margin for what timed steps miss."""
    return EPOCH_MARGIN * (train_images + EVAL_COST * val_images) / images_per_s


def least_part(train_images: int, batch_size: int) -> int:
    """The fewest images a part-epoch fine-tune is worth: :data:`MIN_PART` of the set and
    :data:`MIN_STEPS` batches (the whole set when it is smaller)."""
    return min(train_images, max(math.ceil(MIN_PART * train_images), MIN_STEPS * batch_size))


def measure_speed(
    model: nn.Module,
    loader: Iterable,
    objective: Objective,
    runtime: Runtime,
    channels_last: bool,
    prepare: Callable[[nn.Module], None] | None = None,
    steps: int = 4,
) -> float:
    """Training images per second: forward and backward passes of the first ``steps`` batches
    (the first untimed when there are more: it pays for warm-up), weights and BatchNorm
    statistics restored after.

    No optimizer step is taken, so the model leaves exactly as it came; the optimizer's own
    cost is small beside the backward pass of a convolutional net.
    """
    saved = copy.deepcopy(model.state_dict())
    model.train()
    if prepare is not None:
        prepare(model)
    timed: list[tuple[int, float]] = []  # (images, seconds) of each step
    started = time.perf_counter()
    for step, batch in enumerate(loader):  # each step timed with its batch's loading
        inputs, targets = to_device(batch, runtime, channels_last)
        with runtime.autocast():
            loss, _ = objective(model(inputs), targets)
        loss.backward()
        ended = time.perf_counter()
        timed.append((inputs.shape[0], ended - started))
        started = ended
        if step + 1 >= steps:
            break
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    timed = timed[1:] or timed  # one batch only: its time, warm-up included (an overestimate)
    seconds = sum(s for _, s in timed)
    return sum(n for n, _ in timed) / seconds if seconds > 0 else math.nan


def plan_fine_tune(
    model: nn.Module,
    loaders: Any,
    objective: Objective,
    runtime: Runtime,
    train_cfg: Any,
    budget: Budget,
    has_probe: bool,
    prepare: Callable[[nn.Module], None] | None,
) -> EpochPlan:
    """Time a few training steps, then plan the fine-tune epochs that fit in what is left of
    ``budget`` (after a reserve for choosing thresholds and writing the run), and say so."""
    speed = measure_speed(
        model, loaders.train, objective, runtime, train_cfg.channels_last, prepare
    )
    left = budget.spare()
    train_images = loaders.sampler.images
    plan = plan_epochs(
        left, train_cfg.epochs, train_images, len(loaders.val.dataset), speed, not has_probe,
        train_cfg.batch_size,
    )  # fmt: skip
    used = f"{duration(budget.elapsed())} used so far"
    cost = f"{speed:.1f} img/s -> an epoch with validation takes ~{duration(plan.epoch_s)}"
    if plan.epochs == 0:
        log.info(
            "budget: %s; %s: no fine-tune epoch fits in the %s left, so the probe is "
            "the model (raise train.budget, or set it to off, to fine-tune)",
            used, cost, duration(max(left, 0.0)),
        )  # fmt: skip
    elif plan.part(train_images):
        whole = epoch_seconds(train_images, len(loaders.val.dataset), speed)
        log.info(
            "budget: %s; %.1f img/s -> a whole epoch with validation takes ~%s, more than the "
            "%s left: one fine-tune epoch of %d of the %d training images (a random draw), "
            "~%s",
            used, speed, duration(whole), duration(max(left, 0.0)), plan.images, train_images,
            duration(plan.epoch_s),
        )  # fmt: skip
    else:
        log.info(
            "budget: %s; %s: %d of at most %d epochs fit",
            used, cost, plan.epochs, train_cfg.epochs,
        )  # fmt: skip
    return plan


def validation_deadline(
    budget: Budget, val_images: int, at_least: int = 0
) -> Callable[[int, float], bool]:
    """A ``stop(images, seconds)`` for :func:`~pictag.training.loop.train_one_epoch` that ends
    an epoch once what is left of ``budget`` only just covers its validation pass (timed at
    the epoch's own speed, which the few steps of the plan may have overestimated) and the
    reserve.

    Args:
        budget: The run's budget.
        val_images: Images of a validation pass.
        at_least: Never stop before this many images: a run with no probe to fall back on
            trains the least part worth it (:func:`least_part`) even past its budget.
    """

    def stop(images: int, seconds: float) -> bool:
        if images < at_least:
            return False
        speed = images / seconds if seconds > 0 else math.inf
        validation = epoch_seconds(0, val_images, speed)
        return budget.spare() <= validation

    return stop


def reserve_seconds(budget_s: float) -> float:
    """Time kept back for what follows the last epoch (tuning thresholds, writing files)."""
    return 2.0 + 0.03 * budget_s


def next_epoch_fits(budget: Budget, epoch_s: float) -> bool:
    """Whether another epoch of ``epoch_s`` seconds fits in what is left of the budget."""
    return budget.spare() >= epoch_s
