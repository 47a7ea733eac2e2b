"""``pictag train``: data -> model -> epochs -> run folder, resumable after any interruption."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pictag.config import Config, config_from_dict
from pictag.data.pipeline import SPLITS_FILE, PreparedData, prepare_data
from pictag.evaluation.evaluate import tune_run_thresholds
from pictag.fileio import write_json
from pictag.heads import LossOptions, get_kind, label_counts
from pictag.models.classifier import Classifier
from pictag.models.run import META_FILE, build_model, run_meta, save_model
from pictag.training.checkpoint import has_last, load_last, save_last
from pictag.training.loaders import Loaders, make_loaders
from pictag.training.logs import MetricsLog
from pictag.training.loop import Objective, train_one_epoch, validate
from pictag.training.mix import Mixer
from pictag.training.optim import (
    build_optimizer,
    build_scheduler,
    freeze_batchnorm,
    set_backbone_trainable,
)
from pictag.training.probe import cached_features, extract_features, fit_heads
from pictag.training.runtime import (
    Runtime,
    average_batchnorm_stats,
    broadcast_from_main,
    cleanup,
    epoch_seed,
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
    config: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True
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
        progress: Show progress bars.
    """
    out_dir = Path(out_dir)
    if resume:
        config = _resumed_config(out_dir)
    runtime = setup_runtime(config.train.device, config.train.amp)
    try:
        result = _train(config, out_dir, runtime, resume, progress and runtime.is_main)
        if runtime.is_main and any(h.kind == "multilabel" for h in config.heads.values()):
            # Per-label thresholds tuned on the validation split of the chosen model, stored in
            # pictag.json for every prediction path.
            tune_run_thresholds(out_dir, progress=progress, device=str(runtime.device))
        return result
    finally:
        cleanup(runtime)


def _train(
    config: Config, out_dir: Path, runtime: Runtime, resume: bool, progress: bool
) -> TrainResult:
    train_cfg = config.train
    seed_everything(train_cfg.seed + runtime.rank, train_cfg.deterministic)
    data = prepare_data(config, out_dir if runtime.is_main else None, progress=progress)
    if not data.splits.get("train"):
        raise ValueError("no training images left after the checks and the split")
    if runtime.is_main:
        # atomic: a kill -9 while rewriting it on resume must not leave the run unresumable
        write_json(out_dir / "config.resolved.json", {"config": _config_dict(config)})
    model, pre = build_model(config.model, data.heads, config.heads)
    model.to(runtime.device)
    broadcast_from_main(model, runtime)  # one initial model, whatever each rank's seed drew
    if train_cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    objective = make_objective(config, data)
    loaders = make_loaders(data, pre, config, runtime, progress)
    thresholds = {n: [0.5] * h.num_labels for n, h in data.heads.items() if h.kind == "multilabel"}

    def save_best(state_model: torch.nn.Module, metrics: dict, epoch: int) -> None:
        if runtime.is_main:
            extra = {"metrics": metrics, "epoch": epoch, "mode": train_cfg.mode}
            meta = run_meta(config, data.heads, pre, thresholds, extra)
            save_model(out_dir, state_model.state_dict(), meta)

    probe = None
    if train_cfg.mode in ("linear-probe", "probe-then-fine-tune") and not resume:
        probe = run_probe(model, loaders, objective, runtime, out_dir, train_cfg, progress)
        save_best(model, probe, 0)
        if train_cfg.mode == "linear-probe":
            return TrainResult(out_dir, 0, probe["score"], probe, [{"epoch": 0, **probe}])
    return fine_tune(
        model, loaders, objective, runtime, config, out_dir, resume, save_best, progress, probe
    )


def make_objective(config: Config, data: PreparedData) -> Objective:
    """Each head's kind builds its loss from the head's options and the training label counts."""
    kinds, losses, weights, sizes = {}, {}, {}, {}
    train = data.splits["train"]
    for name, head in data.heads.items():
        kind = get_kind(head.kind)
        cfg = config.heads[name]
        targets = np.stack([head.target(s.labels.get(name)) for s in train])
        counts = label_counts(head.kind, targets, head.num_labels)
        known = (targets >= 0).sum(0) if head.kind == "multilabel" else int((targets >= 0).sum())
        options = LossOptions(
            name=cfg.loss, label_smoothing=cfg.label_smoothing, balance=cfg.balance
        )
        kinds[name], weights[name], sizes[name] = kind, cfg.weight, head.num_labels
        losses[name] = kind.make_loss(options, counts, known)
    return Objective(kinds, losses, weights, sizes)


def run_probe(
    model: Classifier,
    loaders: Loaders,
    objective: Objective,
    runtime: Runtime,
    out_dir: Path,
    train_cfg: Any,
    progress: bool,
) -> dict[str, float]:
    """Fit the heads on cached features of the frozen backbone; return validation metrics."""
    cache = out_dir / "features" if runtime.is_main and not runtime.distributed else None
    features, targets = cached_features(
        cache / "train.safetensors" if cache else None,
        lambda: extract_features(
            model, loaders.train_plain, runtime, train_cfg.channels_last, progress, cache
        ),
    )
    fit_heads(
        model,
        features.to(runtime.device),
        {k: v.to(runtime.device) for k, v in targets.items()},
        objective,
    )
    metrics = validate(model, loaders.val, objective, runtime, train_cfg.channels_last)
    if progress:
        log.info("linear probe: %s", _short(metrics))
    return metrics


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
    probe: dict[str, float] | None = None,
) -> TrainResult:
    """The epoch loop with warmup, freezing, EMA, early stopping and resumable checkpoints.

    ``probe`` (the linear probe's validation metrics) is the best so far, as epoch 0: an epoch
    that validates worse does not replace the probe's model.
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
        "history": [],
    }
    if probe is not None and not math.isnan(_monitored(probe, train_cfg.monitor)):
        state.update(best_score=_monitored(probe, train_cfg.monitor), best_epoch=0)
        state["best_metrics"] = probe
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
            progress=progress,
        )  # fmt: skip
        average_batchnorm_stats([model, ema], runtime)  # so ranks validate what rank 0 saves
        eval_model = ema.module if ema is not None else model
        val = validate(eval_model, loaders.val, objective, runtime, train_cfg.channels_last)
        score = _monitored(val, train_cfg.monitor)
        record = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in fit.items()},
                  **{f"val/{k}": v for k, v in val.items()}}  # fmt: skip
        logger.log(record)
        if progress:
            log.info("epoch %d/%d %s", epoch + 1, train_cfg.epochs, _short(val))
        improved = not math.isnan(score) and score > state["best_score"]
        if improved or state["best_epoch"] < 0:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0, best_metrics=val)
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


def _monitored(metrics: dict[str, float], monitor: str) -> float:
    key = "score" if monitor == "auto" else monitor
    if key not in metrics:
        raise KeyError(
            f"train.monitor {monitor!r} is not a validation metric; have {sorted(metrics)}"
        )
    value = metrics[key]
    return -value if key.endswith("loss") else value  # higher is better for everything else


def _make_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)


def _make_mixer(objective: Objective, train_cfg: Any) -> Mixer:
    return Mixer(objective.kinds, objective.sizes, train_cfg.mixup, train_cfg.cutmix)


def _resumed_config(out_dir: Path) -> Config:
    meta_path = out_dir / "config.resolved.json"
    if not meta_path.is_file():
        meta_path = out_dir / META_FILE
    if not meta_path.is_file() or not has_last(out_dir):
        raise FileNotFoundError(
            f"nothing to resume in {out_dir}: no finished epoch was saved there"
        )
    config = config_from_dict(json.loads(meta_path.read_text(encoding="utf-8"))["config"])
    config.data.split_file = str(out_dir / SPLITS_FILE)  # the same images in the same splits
    return config


def _config_dict(config: Config) -> dict[str, Any]:
    from pictag.config import config_to_dict

    return config_to_dict(config)


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
