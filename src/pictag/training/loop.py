"""One epoch of training and one pass of validation; the objective is the weighted sum of the
heads' losses, and each head's kind supplies its own loss, activation and metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from pictag.config import Config
from pictag.data.pipeline import PreparedData
from pictag.heads import HeadKind, LossOptions, Params, get_kind
from pictag.run import default_params
from pictag.training.mix import Mixer
from pictag.training.runtime import Runtime, all_reduce_sum

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Objective:
    """Per-head kinds, loss functions, weights, sizes, and the decision parameters validation
    scores with (the kinds' defaults: thresholds are tuned once training has chosen a model)."""

    kinds: dict[str, HeadKind]
    losses: dict[str, LossFn]
    weights: dict[str, float]
    sizes: dict[str, int]
    params: dict[str, Params] = field(default_factory=dict)

    def __call__(
        self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(logits[name].float(), targets[name]) for name, fn in self.losses.items()}
        total = sum(self.weights[name] * loss for name, loss in parts.items())
        return total, parts  # type: ignore[return-value]


def make_objective(config: Config, data: PreparedData) -> Objective:
    """Each head's kind builds its loss from the head's options and the training label counts."""
    kinds, losses, weights, sizes = {}, {}, {}, {}
    train = data.splits["train"]
    for name, head in data.heads.items():
        kind = get_kind(head.kind)
        cfg = config.heads[name]
        targets = np.stack([head.target(s.labels.get(name)) for s in train])
        counts = kind.count_labels(targets, head.num_labels)
        options = LossOptions(
            name=cfg.loss, label_smoothing=cfg.label_smoothing, balance=cfg.balance
        )
        kinds[name], weights[name], sizes[name] = kind, cfg.weight, head.num_labels
        losses[name] = kind.make_loss(options, counts, kind.count_known(targets))
    return Objective(kinds, losses, weights, sizes, default_params(data.heads, config))


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    runtime: Runtime,
    *,
    epoch: int,
    accumulate: int = 1,
    clip_grad: float = 0.0,
    mixer: Mixer | None = None,
    ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    prepare: Callable[[nn.Module], None] | None = None,
    progress: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; return mean losses and images per second.

    ``on_step(step, images, seconds)`` is called after each step with the images seen and the
    seconds since the epoch began (e.g. to estimate the run's time). ``stop(images, seconds)``,
    asked after each optimizer step, ends the pass early when it says so (a time budget running
    out); the result then holds ``stopped_at_step``.
    """
    model.train()
    if prepare is not None:
        prepare(model)  # e.g. keep BatchNorm statistics frozen
    sums: dict[str, float] = {}
    seen, start, stopped_at = 0, time.perf_counter(), None
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    optimizer.zero_grad(set_to_none=True)
    for step, loaded in enumerate(bar):
        images, targets = to_device(loaded, runtime, channels_last)
        if mixer is not None:
            images, targets = mixer(images, targets)
        with runtime.autocast():
            logits = model(images)
        loss, parts = objective(logits, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                "lower train.lr or enable train.clip_grad"
            )
        (scaler.scale(loss) if scaler else loss).div(accumulate).backward()
        if (step + 1) % accumulate == 0 or step + 1 == len(loader):  # type: ignore[arg-type]
            optimizer_step(model, optimizer, scaler, clip_grad)
            scheduler.step()
            if ema is not None:
                ema.update(model)
        batch = images.shape[0]
        seen += batch
        for name, value in {"loss": loss, **{f"loss/{k}": v for k, v in parts.items()}}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * batch
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", img_s=f"{seen / elapsed:.1f}")
        if on_step is not None:
            on_step(step, seen, elapsed)
        if _stops(stop, step, accumulate, len(loader), seen, elapsed):  # type: ignore[arg-type]
            stopped_at = step + 1
            break
    elapsed = time.perf_counter() - start
    totals = all_reduce_sum(torch.tensor([seen, *sums.values()], dtype=torch.float64), runtime)
    result = {k: float(v / max(totals[0], 1)) for k, v in zip(sums, totals[1:], strict=True)}
    result["images_per_s"] = float(totals[0]) / elapsed if elapsed > 0 else math.nan
    result["lr"] = optimizer.param_groups[-1]["lr"]
    if stopped_at is not None:
        result["stopped_at_step"] = stopped_at
    return result


def _stops(
    stop: Callable[[int, float], bool] | None,
    step: int,
    accumulate: int,
    steps: int,
    seen: int,
    elapsed: float,
) -> bool:
    """Whether to end the pass after ``step``: only after an optimizer step, before the last."""
    stepped = (step + 1) % accumulate == 0
    return stop is not None and stepped and step + 1 < steps and stop(seen, elapsed)


def to_device(
    batch: tuple[torch.Tensor, dict[str, torch.Tensor]], runtime: Runtime, channels_last: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A loader's ``(images, {head: targets})`` on the run's device, images channels-last when
    asked (the layout the model was put in)."""
    images, targets = batch
    images = images.to(runtime.device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, {k: v.to(runtime.device, non_blocking=True) for k, v in targets.items()}


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip_grad: float,
) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    loader: Iterable,
    objective: Objective,
    runtime: Runtime,
    channels_last: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Probabilities and targets of every head over ``loader`` (gathered from all ranks)."""
    model.eval()
    probs: dict[str, list[np.ndarray]] = {name: [] for name in objective.kinds}
    targets: dict[str, list[np.ndarray]] = {name: [] for name in objective.kinds}
    loss_sum, seen = 0.0, 0
    for batch in loader:
        images, batch_targets = to_device(batch, runtime, channels_last)
        with runtime.autocast():
            logits = model(images)
        loss, _ = objective(logits, batch_targets)
        loss_sum += float(loss) * images.shape[0]
        seen += images.shape[0]
        for name, kind in objective.kinds.items():
            probs[name].append(kind.activate(logits[name].float()).cpu().numpy())
            targets[name].append(batch_targets[name].cpu().numpy())
    local = (
        {k: _concat(v, objective.sizes[k]) for k, v in probs.items()},
        {k: _concat(v, None) for k, v in targets.items()},
        (loss_sum, seen),
    )
    if runtime.distributed:
        gathered: list = [None] * runtime.world_size
        dist.all_gather_object(gathered, local)
        local = (
            {k: np.concatenate([g[0][k] for g in gathered]) for k in objective.kinds},
            {k: np.concatenate([g[1][k] for g in gathered]) for k in objective.kinds},
            (sum(g[2][0] for g in gathered), sum(g[2][1] for g in gathered)),
        )
    loss_sum, seen = local[2]
    return local[0], local[1], {"loss": loss_sum / max(seen, 1)}


@dataclass
class Validation:
    """One validation pass: the metrics, and the outputs they came from (for tuning)."""

    metrics: dict[str, float]
    probs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def validate(
    model: nn.Module,
    loader: Iterable,
    objective: Objective,
    runtime: Runtime,
    channels_last: bool = False,
) -> Validation:
    """Validation metrics: ``loss``, ``HEAD/METRIC`` for each head (its kind's metrics at the
    objective's decision parameters), and ``score``, the mean of the heads' primary metrics."""
    probs, targets, result = predict_probs(model, loader, objective, runtime, channels_last)
    return score_outputs(probs, targets, result["loss"], objective)


def score_outputs(
    probs: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    loss: float,
    objective: Objective,
) -> Validation:
    """The :class:`Validation` of outputs computed elsewhere (e.g. heads on cached features):
    ``loss``, each head's metrics at the objective's decision parameters, and ``score``."""
    result = {"loss": loss}
    primaries = []
    for name, kind in objective.kinds.items():
        params = objective.params.get(name, {})
        for metric, value in kind.metrics(probs[name], targets[name], params).items():
            result[f"{name}/{metric}"] = value
        primaries.append(result.get(f"{name}/{kind.primary_metric}", math.nan))
    finite = [p for p in primaries if not math.isnan(p)]
    result["score"] = float(np.mean(finite)) if finite else math.nan
    return Validation(result, probs, targets)


def _concat(parts: list[np.ndarray], width: int | None) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, width) if width else (0,), dtype=np.float32)
