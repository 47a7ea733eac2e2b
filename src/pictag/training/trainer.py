"""``pictag train``: data -> model -> epochs -> run folder, resumable after any interruption."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from pictag.config import Config, ConfigError, absolute_data_paths, resolve_defaults
from pictag.data.pipeline import prepare_data
from pictag.heads import check_config, check_monitor, get_kind
from pictag.models.backbone import check_backbone_name
from pictag.run import (
    RESUME_CONFIG_FILE,
    build_model,
    claim_run_dir,
    discard_unfinished,
    remove_stale_tmp,
    run_meta,
    save_model,
    write_resume_config,
    write_splits,
)
from pictag.training.announce import (
    device_text,
    metrics_text,
    plan_lines,
    step_timer,
    summary_keys,
)
from pictag.training.budget import AUTO_PATIENCE, Budget, plan_fine_tune
from pictag.training.budget_setting import budget_line, budget_seconds, deterministic_line
from pictag.training.decisions import tune_decisions
from pictag.training.dense_probe import run_dense_probe
from pictag.training.epochs import TrainResult, fine_tune, prepare_for, record
from pictag.training.loaders import make_loaders
from pictag.training.logs import MetricsLog
from pictag.training.loop import (
    Validation,
    make_objective,
)
from pictag.training.probe import run_probe
from pictag.training.resume import ended_result, resumed_config
from pictag.training.runtime import (
    Runtime,
    amp_setting,
    broadcast_from_main,
    cleanup,
    process_rank,
    seed_everything,
    setup_runtime,
)

log = logging.getLogger(__name__)


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
    budget = Budget(None)  # counts from here: the data checks are part of the user's wait
    out_dir = Path(out_dir)
    # A copy: the run may fill in or change fields, and the caller's object must stay as given.
    if resume and (ended := ended_result(out_dir)) is not None:
        return ended  # nothing to do: no data checks, no files rewritten
    config = resumed_config(out_dir) if resume else copy.deepcopy(config)
    resolve_defaults(config)  # a Config built in code may leave `auto` choices unresolved
    check_config(config)
    check_backbone_name(config.model.backbone)  # before the data checks, which take minutes
    writer = process_rank() == 0  # under torchrun only rank 0 writes the run
    if resume:
        if writer:
            remove_stale_tmp(out_dir)  # an interrupted write's leftovers
    else:
        claim_run_dir(out_dir, overwrite, clear=writer)
        absolute_data_paths(config)  # the run's stored config must work from any folder
    try:
        runtime = setup_runtime(config.train.device, config.train.amp, config.train.threads)
    except ValueError as err:  # a resumed run's device, absent here
        where = f"; the run stored it in {out_dir / RESUME_CONFIG_FILE}" if resume else ""
        raise ValueError(f"{err}{where}") from None
    asked_amp = config.train.amp
    # The run stores the precision it chose, so resuming it (here or elsewhere) keeps it.
    config.train.amp = amp_setting(runtime.amp_dtype)
    if not resume and not runtime.distributed:  # a resumed run keeps the epochs it planned
        budget.seconds = budget_seconds(
            config.train.budget, runtime.device, config.train.deterministic
        )
        if config.train.deterministic and runtime.is_main:
            _say_deterministic_budget(config.train.budget, runtime.device)
    try:
        result = _train(
            config, out_dir, runtime, resume, progress and runtime.is_main, asked_amp, budget
        )
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
    config: Config,
    out_dir: Path,
    runtime: Runtime,
    resume: bool,
    progress: bool,
    amp: str,
    budget: Budget,
) -> TrainResult:
    train_cfg = config.train
    seed_everything(train_cfg.seed + runtime.rank, train_cfg.deterministic)
    data = prepare_data(config, out_dir if runtime.is_main else None, progress=progress)
    if not data.splits.get("train"):
        raise ValueError("no training images left after the checks and the split")
    check_monitor(train_cfg.monitor, {name: head.kind for name, head in data.heads.items()})
    _fit_spatial_heads(config, data.heads, runtime.distributed)
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
        probes = train_cfg.mode == "probe-then-fine-tune"
        if train_cfg.mode != "linear-probe" and (line := budget_line(
            train_cfg.budget, budget.seconds, train_cfg.epochs, probes
        )):  # fmt: skip
            log.info(line)

    def save_best(state_model: torch.nn.Module, val: Validation, epoch: int) -> None:
        if runtime.is_main:
            extra = {"metrics": val.metrics, "epoch": epoch, "mode": train_cfg.mode}
            meta = run_meta(config, data.heads, pre, objective.params, extra)
            save_model(out_dir, state_model.state_dict(), meta, (val.probs, val.targets))

    probe, history = None, []
    if train_cfg.mode in ("linear-probe", "probe-then-fine-tune") and not resume:
        if len(model.dense):
            probe, losses = run_dense_probe(
                model, loaders, objective, runtime, train_cfg, pre.size, progress, budget
            )
        else:
            probe, losses = run_probe(
                model, loaders, objective, runtime, out_dir, train_cfg, progress,
                has_val=bool(data.splits.get("val")),
            )  # fmt: skip
        if runtime.is_main:
            shown = metrics_text(probe.metrics, summary_keys(objective.kinds))
            what = "dense probe" if len(model.dense) else "linear probe"
            log.info("%s: val loss %.4f %s", what, probe.metrics["loss"], shown)
        save_best(model, probe, 0)
        # Epoch 0 of metrics.jsonl: the report shows the probe beside the epochs (if any).
        fit = {"loss": sum(objective.weights[n] * v for n, v in losses.items()), **{
            f"loss/{name}": value for name, value in losses.items()}}  # fmt: skip
        history = [record(0, fit, probe.metrics)]
        if train_cfg.mode == "linear-probe":
            return _probe_result(out_dir, runtime, probe, history)
    if budget.active and not resume:
        prepare = prepare_for(config)
        plan = plan_fine_tune(
            model, loaders, objective, runtime, train_cfg, budget, probe is not None, prepare
        )
        if plan.epochs == 0 and probe is not None:
            return _probe_result(out_dir, runtime, probe, history)
        train_cfg.epochs = plan.epochs
        if train_cfg.patience is None and probe is not None:
            _stop_when_no_gain(train_cfg)
        if plan.part(loaders.sampler.images):
            train_cfg.epoch_images = loaders.sampler.limit = plan.images
        write_resume_config(out_dir, config)  # a resumed run continues the planned epochs
    # A budgeted run has printed its plan from timed steps already.
    timed = runtime.is_main and not resume and not budget.active
    timer = step_timer(config, data, pre.size[0]) if timed else None
    return fine_tune(
        model, loaders, objective, runtime, config, out_dir, resume, save_best, progress, probe,
        timer, history, budget,
    )  # fmt: skip


def _say_deterministic_budget(setting: str, device: torch.device) -> None:
    """A deterministic run without the default budget says so; with a budget, warns that the
    plan can differ from run to run."""
    line = deterministic_line(setting, device)
    if line is not None:
        (log.info if setting == "auto" else log.warning)(line)


def _stop_when_no_gain(train_cfg: Any) -> None:
    """A budget spends no time on epochs that do not beat the probe: ``train.patience`` left
    unset becomes :data:`AUTO_PATIENCE` after the frozen epochs, which only refit the probe's
    heads (stored with the plan, so a resumed run keeps it)."""
    train_cfg.patience = AUTO_PATIENCE + train_cfg.freeze_epochs
    if train_cfg.epochs > train_cfg.patience:
        log.info(
            "budget: stops early after %d epochs in a row that validate no better than the best "
            "so far, the probe included (train.patience=0 to run every planned epoch)",
            train_cfg.patience,
        )


POLICIES = ("randaugment", "trivialaugment")  # torchvision's: they refuse boxes and masks


def _fit_spatial_heads(config: Config, heads: dict[str, Any], distributed: bool) -> None:
    """Settle the training of heads that locate things: MixUp/CutMix would blend their boxes
    and masks, torchvision's RandAugment and TrivialAugment cannot move them (they would fail
    at the first fine-tune batch, after the probe), and their probe
    (:mod:`pictag.training.dense_probe`) runs in one process only.

    Raises:
        ConfigError: MixUp/CutMix or an augmentation policy is on, or a linear probe alone
            under torchrun.
    """
    spatial = [name for name, head in heads.items() if get_kind(head.kind).spatial]
    if not spatial:
        return
    train_cfg, names = config.train, ", ".join(spatial)
    if train_cfg.mixup > 0 or train_cfg.cutmix > 0:
        raise ConfigError(
            f"train.mixup/cutmix: they would blend the boxes or masks of head(s) {names}"
        )
    if train_cfg.augment in POLICIES:
        raise ConfigError(
            f"train.augment: {train_cfg.augment} cannot move the boxes or masks of head(s) "
            f"{names}; use light (crop and flip, which move them) or none"
        )
    if distributed and train_cfg.mode == "linear-probe":
        raise ConfigError(f"train.mode: the probe of head(s) {names} runs without torchrun")
    if distributed and train_cfg.mode == "probe-then-fine-tune":
        log.info("head(s) %s: no probe under torchrun, the whole model fine-tunes", names)
        train_cfg.mode = "fine-tune"


def _probe_result(
    out_dir: Path, runtime: Runtime, probe: Validation, history: list[dict[str, Any]]
) -> TrainResult:
    """The run's result when the linear probe is its model."""
    MetricsLog(out_dir, runtime.is_main).log(history[0])
    return TrainResult(out_dir, 0, probe.metrics["score"], probe.metrics, history)
