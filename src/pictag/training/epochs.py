"""The fine-tune epoch loop: warmup, freezing, EMA, early stopping, the budget's stop, and
resumable checkpoints after every epoch."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pictag.config import Config
from pictag.heads import higher_is_better
from pictag.models.classifier import Classifier
from pictag.training.announce import epoch_line, metrics_text, summary_keys
from pictag.training.budget import Budget, least_part, next_epoch_fits, validation_deadline
from pictag.training.checkpoint import has_last, load_last, save_last
from pictag.training.loaders import Loaders
from pictag.training.logs import MetricsLog
from pictag.training.loop import Objective, Validation, train_one_epoch, validate
from pictag.training.mix import Mixer
from pictag.training.optim import (
    build_optimizer,
    build_scheduler,
    freeze_batchnorm,
    set_backbone_trainable,
)
from pictag.training.runtime import Runtime, average_batchnorm_stats, epoch_seed, seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    best_score: float
    metrics: dict[str, float]
    history: list[dict[str, Any]]


def prepare_for(config: Config) -> Callable[[torch.nn.Module], None] | None:
    """What each training epoch does to the model first: freeze BatchNorm statistics when
    fine-tuning pretrained weights (``train.freeze_bn``)."""
    pretrained = config.model.pretrained != "none"
    return freeze_batchnorm if pretrained and config.train.freeze_bn else None


def fine_tune(
    model: Classifier,
    loaders: Loaders,
    objective: Objective,
    runtime: Runtime,
    config: Config,
    out_dir: Path,
    resume: bool,
    save_best: Any,
    progress: bool,
    probe: Validation | None = None,
    timer: Callable[[int, int, float], None] | None = None,
    history: list[dict[str, Any]] | None = None,
    budget: Budget | None = None,
) -> TrainResult:
    """The epoch loop with warmup, freezing, EMA, early stopping and resumable checkpoints.

    ``probe`` (the linear probe's validation metrics) is the best so far, as epoch 0: an epoch
    that validates worse does not replace the probe's model. ``timer`` gets the first epoch's
    steps (see :func:`pictag.training.announce.step_timer`). With a ``budget`` the loop stops
    early when the next epoch would overrun it.
    """
    train_cfg = config.train
    # Heads fitted by the probe are at their optimum for the pretrained features: at the
    # heads' own lr they would drift away while the backbone barely moves, so they start at
    # the backbone's.
    head_scale = train_cfg.backbone_lr_scale if probe is not None else 1.0
    optimizer = build_optimizer(model, train_cfg, head_lr_scale=head_scale)
    steps = math.ceil(len(loaders.train) / train_cfg.accumulate)
    scheduler = build_scheduler(optimizer, train_cfg, steps)
    scaler = torch.amp.GradScaler() if runtime.amp_dtype == torch.float16 else None
    ema = _make_ema(model, train_cfg.ema)
    state: dict[str, Any] = {
        "best_score": -math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": list(history or []),  # the probe's record, before the epochs
    }
    patience = train_cfg.patience or 0  # None: the trainer's default (0 but under a budget)
    monitored = functools.partial(_monitored, monitor=train_cfg.monitor, objective=objective)
    if probe is not None and not math.isnan(monitored(probe.metrics)):
        state.update(best_score=monitored(probe.metrics), best_epoch=0)
        state["best_metrics"] = probe.metrics
    start = 0
    if resume and has_last(out_dir):
        start, state = load_last(
            out_dir, model=model, optimizer=optimizer, scheduler=scheduler, ema=ema, scaler=scaler
        )
    elif probe is not None and runtime.is_main:
        # From here on the run can be resumed from its probe: before, a Ctrl-C in the first
        # epoch left a run (the probe's model) that neither --resume nor a new run would take.
        # (From scratch, a failed first epoch leaves nothing worth keeping: the folder goes.)
        save_last(out_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                  epoch=0, extra=state, ema=ema, scaler=scaler)  # fmt: skip
    logger = MetricsLog(out_dir, runtime.is_main, state["history"])
    net, trainable = model, None
    mixer = _make_mixer(objective, train_cfg) if train_cfg.mixup or train_cfg.cutmix else None
    prepare = prepare_for(config)
    deadline = None
    if budget is not None and budget.active:
        # With no probe to fall back on, the least part worth training is trained in any case.
        floor = 0 if probe is not None else least_part(loaders.sampler.size, train_cfg.batch_size)
        deadline = validation_deadline(budget, len(loaders.val.dataset), floor)
    for epoch in range(start, train_cfg.epochs):
        started = time.perf_counter()
        seed_everything(epoch_seed(train_cfg.seed, epoch, runtime.rank))  # resume-proof streams
        loaders.set_epoch(epoch)
        if mixer is not None:
            mixer.generator = np.random.default_rng(train_cfg.seed * 1000 + epoch)
        if trainable != (epoch >= train_cfg.freeze_epochs):
            trainable = epoch >= train_cfg.freeze_epochs
            set_backbone_trainable(model, trainable)
            net = _wrap(model, runtime)
        fit = train_one_epoch(
            net, loaders.train, objective, optimizer, scheduler, runtime, epoch=epoch,
            accumulate=train_cfg.accumulate, clip_grad=train_cfg.clip_grad, mixer=mixer,
            ema=ema, scaler=scaler, channels_last=train_cfg.channels_last, prepare=prepare,
            progress=progress, on_step=timer if epoch == start else None, stop=deadline,
        )  # fmt: skip
        cut = "stopped_at_step" in fit
        if cut:
            log.info(
                "budget: stopping epoch %d after %d of %d steps, to leave time for validation",
                epoch + 1, fit.pop("stopped_at_step"), len(loaders.train),
            )  # fmt: skip
        average_batchnorm_stats([model, ema], runtime)  # so ranks validate what rank 0 saves
        eval_model = ema.module if ema is not None else model
        val = validate(eval_model, loaders.val, objective, runtime, train_cfg.channels_last)
        score = monitored(val.metrics)
        logger.log(record(epoch + 1, fit, val.metrics))
        if runtime.is_main:
            seconds = time.perf_counter() - started
            line = epoch_line(epoch + 1, train_cfg.epochs, fit, val.metrics, seconds)
            log.info("%s %s", line, metrics_text(val.metrics, summary_keys(objective.kinds)))
        improved = not math.isnan(score) and score > state["best_score"]
        if improved or state["best_epoch"] < 0:
            state.update(
                best_score=score, best_epoch=epoch + 1, bad_epochs=0, best_metrics=val.metrics
            )
            save_best(eval_model, val, epoch + 1)
        else:
            state["bad_epochs"] += 1
        state["history"] = logger.history
        last = epoch + 1 == train_cfg.epochs
        # Why the run ends before its last epoch, if it does; stored, so a --resume of the
        # ended run leaves it as it is.
        state["ended"] = _early_end(
            epoch + 1, state["bad_epochs"], patience, last, cut, budget,
            time.perf_counter() - started,
        )  # fmt: skip
        if runtime.is_main:
            save_last(out_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                      epoch=epoch + 1, extra=state, ema=ema, scaler=scaler)  # fmt: skip
        if state["ended"] is not None:
            if not state["ended"].startswith("budget: epoch"):  # a cut epoch has said so
                log.info("%s", state["ended"])
            break
    logger.close()
    best = state.get("best_metrics", {})
    return TrainResult(out_dir, state["best_epoch"], state["best_score"], best, logger.history)


def _early_end(
    epoch: int,
    bad_epochs: int,
    patience: int,
    last: bool,
    cut: bool,
    budget: Budget | None,
    epoch_s: float,
) -> str | None:
    """Why the run stops after ``epoch`` (counted from 1) though it is not its last, or None."""
    if last:
        return None
    if patience > 0 and bad_epochs >= patience:
        return f"early stop: no improvement for {patience} epochs"
    if cut:
        return f"budget: epoch {epoch} was stopped to leave time for validation"
    if budget is not None and budget.active and not next_epoch_fits(budget, epoch_s):
        return f"budget: stopping after epoch {epoch}, the next would overrun"
    return None


def _wrap(model: Classifier, runtime: Runtime) -> torch.nn.Module:
    # DDP syncs the gradients of the parameters that required grad when it was built: freezing
    # or thawing the backbone needs a new wrapper (an old one fails on frozen parameters).
    return DistributedDataParallel(model) if runtime.distributed else model


def _monitored(metrics: dict[str, float], monitor: str, objective: Objective) -> float:
    """The monitored value, negated where lower is better (so higher is always better)."""
    key = "score" if monitor == "auto" else monitor
    value = metrics[key]  # check_monitor made sure the key exists before training
    kinds = {name: kind.name for name, kind in objective.kinds.items()}
    return value if higher_is_better(key, kinds) else -value


def _make_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)


def _make_mixer(objective: Objective, train_cfg: Any) -> Mixer:
    return Mixer(objective.kinds, objective.sizes, train_cfg.mixup, train_cfg.cutmix)


def record(epoch: int, fit: dict[str, float], val: dict[str, float]) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: ``train/...`` and ``val/...`` values of an epoch."""
    return {
        "epoch": epoch,
        **{f"train/{k}": v for k, v in fit.items()},
        **{f"val/{k}": v for k, v in val.items()},
    }
