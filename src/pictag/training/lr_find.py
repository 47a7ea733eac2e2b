"""Learning-rate range test (Leslie Smith; fastai's ``lr_find``): train a few steps while the
learning rate grows geometrically, and suggest the rate where the loss falls fastest.

Not ``torch-lr-finder``: it drives every parameter group to one end rate (our backbone group
must keep its ``backbone_lr_scale`` ratio), keeps only the smoothed loss, sweeps on through NaN
losses and wants a GradScaler even for bf16.
"""

from __future__ import annotations

import copy
import io
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pictag.config import Config, resolve_defaults
from pictag.data.pipeline import prepare_data
from pictag.fileio import atomic_write, write_text
from pictag.heads import check_config
from pictag.run import build_model
from pictag.training.loaders import make_loaders
from pictag.training.loop import Objective, make_objective, optimizer_step, to_device
from pictag.training.optim import build_optimizer, freeze_batchnorm
from pictag.training.runtime import Runtime, cleanup, seed_everything, setup_runtime

log = logging.getLogger(__name__)
BETA = 0.98  # fastai's loss smoothing
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its best (as fastai)


@dataclass
class LRFindResult:
    """Each step's ``train.lr``, raw and smoothed loss, and the suggested ``train.lr``;
    ``stopped`` says why the sweep ended before ``end_lr`` (None: it ran to the end)."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    plot_path: Path | None = None
    csv_path: Path | None = None
    smoothed: list[float] = field(default_factory=list)
    stopped: str | None = None


def lr_find(
    config: Config,
    out_dir: str | Path,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10,
    num_iter: int = 100,
    progress: bool = True,
) -> LRFindResult:
    """Run the range test on ``config``'s data and model (in one process, leaving no run) and
    write ``lr_find.png`` and ``lr_find.csv`` (lr, loss, smoothed_loss) to ``out_dir``.

    Args:
        config: The job; the sweep sets ``train.lr`` (the backbone keeps its ratio to it).
        out_dir: Where the plot and the CSV go; created if missing.
        start_lr: First ``train.lr`` of the sweep.
        end_lr: Last ``train.lr`` of the sweep.
        num_iter: Optimizer steps (the training batches are cycled when an epoch is shorter).
        progress: Show progress bars.

    Raises:
        ValueError: Bad sweep bounds, no training images, or no finite loss at all.
    """
    _check_sweep(start_lr, end_lr, num_iter)  # before minutes of data checks
    config = copy.deepcopy(config)  # prepare_data fills in heads; the caller's object stays
    resolve_defaults(config)  # a hand-built Config may leave backbone_lr_scale unset
    check_config(config)
    cfg = config.train
    runtime = setup_runtime(cfg.device, cfg.amp, cfg.threads)
    try:
        if runtime.distributed:
            raise ValueError("lr_find runs in one process, not under torchrun")
        seed_everything(cfg.seed, cfg.deterministic)
        # No out dir: data.policy=skip would write skipped.csv, which belongs to a run.
        data = prepare_data(config, None, progress=progress)
        if not data.splits.get("train"):
            raise ValueError("no training images left after the checks and the split")
        model, pre = build_model(config.model, data.heads, config.heads)
        model.to(runtime.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        loader = make_loaders(data, pre, config, runtime, progress).train
        freeze = config.model.pretrained != "none" and cfg.freeze_bn  # as fine-tuning does
        result = range_test(
            model, loader, make_objective(config, data), build_optimizer(model, cfg), runtime,
            start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, accumulate=cfg.accumulate,
            clip_grad=cfg.clip_grad, channels_last=cfg.channels_last,
            prepare=freeze_batchnorm if freeze else None, progress=progress,
        )  # fmt: skip
    finally:
        cleanup(runtime)
    csv_path, plot_path = Path(out_dir) / "lr_find.csv", Path(out_dir) / "lr_find.png"
    rows = zip(result.lrs, result.losses, result.smoothed, strict=True)
    lines = [f"{lr!r},{loss!r},{smooth!r}\n" for lr, loss, smooth in rows]
    write_text(csv_path, "lr,loss,smoothed_loss\n" + "".join(lines))
    png = _plot(result)
    atomic_write(plot_path, lambda tmp: tmp.write_bytes(png))
    log.info("suggested train.lr %.3g (%s)", result.suggestion, result.stopped or "full sweep")
    return replace(result, plot_path=plot_path, csv_path=csv_path)


def range_test(
    model: nn.Module,
    loader: DataLoader,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10,
    num_iter: int = 100,
    accumulate: int = 1,
    clip_grad: float = 0.0,
    channels_last: bool = False,
    prepare: Callable[[nn.Module], None] | None = None,
    progress: bool = True,
) -> LRFindResult:
    """Sweep the rate geometrically from ``start_lr`` to ``end_lr`` over ``num_iter`` optimizer
    steps, then restore ``model`` and ``optimizer`` as they were.

    The rate is that of the optimizer's last group (pictag's heads, at ``train.lr``); the other
    groups are scaled with it, keeping their ratio to it (the backbone's ``backbone_lr_scale``).
    """
    _check_sweep(start_lr, end_lr, num_iter)
    if len(loader) == 0:
        raise ValueError("no training batches: add images or lower train.batch_size")
    if num_iter * accumulate > len(loader):
        log.info("%d steps cycle %d training batches", num_iter * accumulate, len(loader))
    reference = optimizer.param_groups[-1]["lr"] or 1.0
    ratios = [group["lr"] / reference for group in optimizer.param_groups]
    # On the CPU so the copy costs no accelerator memory; load_state_dict copies back in place.
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    saved_opt, was_training = copy.deepcopy(optimizer.state_dict()), model.training
    scaler = torch.amp.GradScaler() if runtime.amp_dtype == torch.float16 else None
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stopped, average, batches = None, 0.0, _cycle(loader)
    try:
        model.train()
        if prepare is not None:
            prepare(model)
        optimizer.zero_grad(set_to_none=True)
        for step in tqdm(range(num_iter), desc="lr find", leave=False, disable=not progress):
            lr = start_lr * (end_lr / start_lr) ** (step / (num_iter - 1))
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio
            loss = 0.0
            for _ in range(accumulate):
                images, targets = to_device(next(batches), runtime, channels_last)
                with runtime.autocast():
                    logits = model(images)
                total, _ = objective(logits, targets)
                loss += float(total.detach()) / accumulate
                if not math.isfinite(loss):
                    break  # no backward, no step: the sweep ends here
                (scaler.scale(total) if scaler else total).div(accumulate).backward()
            if not math.isfinite(loss):
                stopped = f"diverged: loss not finite at lr {lr:.3g}"
                break
            optimizer_step(model, optimizer, scaler, clip_grad)
            # Debiased exponential average, as fastai: the first steps are not pulled to 0.
            average = BETA * average + (1 - BETA) * loss
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(average / (1 - BETA ** (step + 1)))
            if smoothed[-1] > DIVERGE * min(smoothed):
                stopped = f"diverged: smoothed loss over {DIVERGE:g}x its best at lr {lr:.3g}"
                break
    finally:
        model.load_state_dict(saved)
        optimizer.load_state_dict(saved_opt)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    if not lrs:
        raise ValueError(f"the loss was not finite at the first step (lr {start_lr:.3g})")
    return LRFindResult(lrs, losses, suggest(lrs, smoothed), smoothed=smoothed, stopped=stopped)


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate where the smoothed loss falls fastest against log(lr) (fastai's ``steep``).

    As fastai, the first tenth and the last few steps are left out when enough remain: the
    start is noise around the initial loss, the end is the loss blowing up.
    """
    lo, hi = len(lrs) // 10, len(lrs) - min(5, len(lrs) // 5)
    if hi - lo < 2:
        lo, hi = 0, len(lrs)
    if hi - lo < 2:
        return float(lrs[0])
    xs, ys = np.log(lrs[lo:hi]), np.asarray(smoothed[lo:hi])
    return float(np.exp(xs[int(np.argmin(np.gradient(ys, xs)))]))


def _check_sweep(start_lr: float, end_lr: float, num_iter: int) -> None:
    if not 0 < start_lr < end_lr or num_iter < 2:
        got = f"start_lr={start_lr}, end_lr={end_lr}, num_iter={num_iter}"
        raise ValueError(f"lr find needs 0 < start_lr < end_lr and num_iter >= 2, got {got}")


def _cycle(loader: DataLoader) -> Iterator:
    # Each pass a new epoch's order, as training would see it (the sampler seeds by epoch).
    for epoch in itertools.count():
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


def _plot(result: LRFindResult) -> bytes:
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="constrained")
    axes = fig.subplots()
    axes.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, label="loss")
    axes.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    axes.axvline(result.suggestion, color="tab:red", linestyle="--",
                 label=f"suggested train.lr {result.suggestion:.2g}")  # fmt: skip
    # The smoothed curve sets the scale: a few raw spikes near the end would flatten it.
    low, high = min(result.smoothed), max(result.smoothed)
    pad = (high - low) or 1.0
    axes.set_ylim(min([*result.losses, low]) - 0.05 * pad, high + 0.1 * pad)
    title = "lr find" + (f" ({result.stopped})" if result.stopped else "")
    axes.set(xscale="log", xlabel="train.lr", ylabel="training loss", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
