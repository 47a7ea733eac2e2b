"""``pictag train``: data -> model -> epochs -> run folder, resumable after any interruption."""

from __future__ import annotations

import copy
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

from pictag.config import Config, absolute_data_paths
from pictag.data.pipeline import prepare_data
from pictag.heads import check_config, check_monitor, higher_is_better
from pictag.models.classifier import Classifier
from pictag.run import (
    build_model,
    claim_run_dir,
    discard_unfinished,
    read_resume_config,
    remove_stale_tmp,
    run_meta,
    save_model,
    write_resume_config,
    write_splits,
)
from pictag.training.announce import (
    device_text,
    epoch_line,
    metrics_text,
    plan_lines,
    step_timer,
    summary_keys,
)
from pictag.training.checkpoint import has_last, load_last, save_last
from pictag.training.decisions import tune_decisions
from pictag.training.loaders import Loaders, make_loaders
from pictag.training.logs import MetricsLog
from pictag.training.loop import (
    Objective,
    Validation,
    make_objective,
    train_one_epoch,
    validate,
)
from pictag.training.mix import Mixer
from pictag.training.optim import (
    build_optimizer,
    build_scheduler,
    freeze_batchnorm,
    set_backbone_trainable,
)
from pictag.training.probe import run_probe
from pictag.training.runtime import (
    Runtime,
    amp_setting,
    average_batchnorm_stats,
    broadcast_from_main,
    cleanup,
    epoch_seed,
    process_rank,
    seed_everything,
    setup_runtime,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    best_epoch: int
    best_score: float
    metrics: dict[str, float]
    history: list[dict[str, Any]]


def train(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a model as ``config`` says and write it to ``out_dir``.

    Under torchrun ``train.batch_size`` is per process and every process takes its shard of
    each epoch's shuffled order: N processes with batch b step over the same images as one
    process with batch N*b (DistributedDataParallel averages the gradients), though BatchNorm
    normalises each process's b images on their own. Only rank 0 writes to ``out_dir``.

    Args:
        config: The whole job.
        out_dir: Run folder: ``model.safetensors``, ``pictag.json``, ``metrics.jsonl``,
            ``splits.csv`` and ``last/`` for resuming.
        resume: Continue the run in ``out_dir`` from its last completed epoch.
        overwrite: Replace a run already in ``out_dir`` (without it, that is an error: a
            finished run is never overwritten by accident, nor an old cache reused).
        progress: Show progress bars.

    Raises:
        RunExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    out_dir = Path(out_dir)
    # A copy: the run may fill in or change fields, and the caller's object must stay as given.
    config = _resumed_config(out_dir) if resume else copy.deepcopy(config)
    check_config(config)
    writer = process_rank() == 0  # under torchrun only rank 0 writes the run
    if resume:
        if writer:
            remove_stale_tmp(out_dir)  # an interrupted write's leftovers
    else:
        claim_run_dir(out_dir, overwrite, clear=writer)
        absolute_data_paths(config)  # the run's stored config must work from any folder
    runtime = setup_runtime(config.train.device, config.train.amp, config.train.threads)
    asked_amp = config.train.amp
    # The run stores the precision it chose, so resuming it (here or elsewhere) keeps it.
    config.train.amp = amp_setting(runtime.amp_dtype)
    try:
        result = _train(config, out_dir, runtime, resume, progress and runtime.is_main, asked_amp)
        if runtime.is_main:
            tune_decisions(out_dir, config, progress, str(runtime.device))
        return result
    except BaseException:
        if writer and not resume and discard_unfinished(out_dir):
            log.info("removed the unfinished run from %s: nothing in it was worth keeping", out_dir)
        raise
    finally:
        cleanup(runtime)


def _train(
    config: Config, out_dir: Path, runtime: Runtime, resume: bool, progress: bool, amp: str
) -> TrainResult:
    train_cfg = config.train
    seed_everything(train_cfg.seed + runtime.rank, train_cfg.deterministic)
    data = prepare_data(config, out_dir if runtime.is_main else None, progress=progress)
    if not data.splits.get("train"):
        raise ValueError("no training images left after the checks and the split")
    check_monitor(train_cfg.monitor, {name: head.kind for name, head in data.heads.items()})
    if runtime.is_main:
        write_splits(out_dir, data.splits)
        write_resume_config(out_dir, config)
    model, pre = build_model(config.model, data.heads, config.heads)
    model.to(runtime.device)
    broadcast_from_main(model, runtime)  # one initial model, whatever each rank's seed drew
    if train_cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    objective = make_objective(config, data)
    loaders = make_loaders(data, pre, config, runtime, progress)
    if runtime.is_main:
        for line in plan_lines(config, data, pre.size[0], device_text(runtime, amp)):
            log.info(line)

    def save_best(state_model: torch.nn.Module, val: Validation, epoch: int) -> None:
        if runtime.is_main:
            extra = {"metrics": val.metrics, "epoch": epoch, "mode": train_cfg.mode}
            meta = run_meta(config, data.heads, pre, objective.params, extra)
            save_model(out_dir, state_model.state_dict(), meta, (val.probs, val.targets))

    probe, history = None, []
    if train_cfg.mode in ("linear-probe", "probe-then-fine-tune") and not resume:
        probe, losses = run_probe(
            model, loaders, objective, runtime, out_dir, train_cfg, progress,
            has_val=bool(data.splits.get("val")),
        )  # fmt: skip
        if runtime.is_main:
            shown = metrics_text(probe.metrics, summary_keys(objective.kinds))
            log.info("linear probe: val loss %.4f %s", probe.metrics["loss"], shown)
        save_best(model, probe, 0)
        # Epoch 0 of metrics.jsonl: the report shows the probe beside the epochs (if any).
        fit = {"loss": sum(objective.weights[n] * v for n, v in losses.items()), **{
            f"loss/{name}": value for name, value in losses.items()}}  # fmt: skip
        history = [_record(0, fit, probe.metrics)]
        if train_cfg.mode == "linear-probe":
            MetricsLog(out_dir, runtime.is_main).log(history[0])
            found = probe.metrics
            return TrainResult(out_dir, 0, found["score"], found, history)
    timer = step_timer(config, data, pre.size[0]) if runtime.is_main and not resume else None
    return fine_tune(
        model, loaders, objective, runtime, config, out_dir, resume, save_best, progress, probe,
        timer, history,
    )  # fmt: skip


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
) -> TrainResult:
    """The epoch loop with warmup, freezing, EMA, early stopping and resumable checkpoints.

    ``probe`` (the linear probe's validation metrics) is the best so far, as epoch 0: an epoch
    that validates worse does not replace the probe's model. ``timer`` gets the first epoch's
    steps (see :func:`pictag.training.announce.step_timer`).
    """
    train_cfg = config.train
    optimizer = build_optimizer(model, train_cfg)
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
    monitored = functools.partial(_monitored, monitor=train_cfg.monitor, objective=objective)
    if probe is not None and not math.isnan(monitored(probe.metrics)):
        state.update(best_score=monitored(probe.metrics), best_epoch=0)
        state["best_metrics"] = probe.metrics
    start = 0
    if resume and has_last(out_dir):
        start, state = load_last(
            out_dir, model=model, optimizer=optimizer, scheduler=scheduler, ema=ema, scaler=scaler
        )
    logger = MetricsLog(out_dir, runtime.is_main, state["history"])
    net, trainable = model, None
    mixer = _make_mixer(objective, train_cfg) if train_cfg.mixup or train_cfg.cutmix else None
    pretrained = config.model.pretrained != "none"
    prepare = freeze_batchnorm if pretrained and train_cfg.freeze_bn else None
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
            progress=progress, on_step=timer if epoch == start else None,
        )  # fmt: skip
        average_batchnorm_stats([model, ema], runtime)  # so ranks validate what rank 0 saves
        eval_model = ema.module if ema is not None else model
        val = validate(eval_model, loaders.val, objective, runtime, train_cfg.channels_last)
        score = monitored(val.metrics)
        logger.log(_record(epoch + 1, fit, val.metrics))
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
        stop = train_cfg.patience > 0 and state["bad_epochs"] >= train_cfg.patience
        if runtime.is_main:
            save_last(out_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                      epoch=epoch + 1, extra=state, ema=ema, scaler=scaler)  # fmt: skip
        if stop:
            log.info("early stop: no improvement for %d epochs", train_cfg.patience)
            break
    logger.close()
    best = state.get("best_metrics", {})
    return TrainResult(out_dir, state["best_epoch"], state["best_score"], best, logger.history)


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


def _resumed_config(out_dir: Path) -> Config:
    """The run's own config and split, when it saved a finished epoch to resume from."""
    if not has_last(out_dir):
        raise FileNotFoundError(
            f"nothing to resume in {out_dir}: no finished epoch was saved there"
        )
    return read_resume_config(out_dir)


def _record(epoch: int, fit: dict[str, float], val: dict[str, float]) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: ``train/...`` and ``val/...`` values of an epoch."""
    return {
        "epoch": epoch,
        **{f"train/{k}": v for k, v in fit.items()},
        **{f"val/{k}": v for k, v in val.items()},
    }
