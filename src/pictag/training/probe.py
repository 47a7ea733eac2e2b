"""Linear probe: pooled features computed once with the frozen backbone, then the heads fitted on
them with full-batch L-BFGS in seconds.

On a ~1,300-photo multi-label set a probe on cached features beat three epochs of full
fine-tuning by two peer tools, at a fraction of the time; it is also the best start for
fine-tuning (``probe-then-fine-tune``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from tqdm.auto import tqdm

from pictag.fileio import atomic_write
from pictag.models.classifier import Classifier
from pictag.models.onnx_features import onnx_feature_extractor
from pictag.training.loaders import Loaders
from pictag.training.loop import Objective, Validation, validate
from pictag.training.runtime import Runtime

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    model: Classifier,
    loader: Iterable,
    runtime: Runtime,
    channels_last: bool = True,
    progress: bool = True,
    cache_dir: Path | None = None,
    use_onnx: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pooled features ``[N, F]`` and stacked targets of every image in ``loader``.

    On a CPU the backbone runs in ONNX Runtime (3-4x faster than eager PyTorch on Lite0) when
    it is installed and the exported graph agrees with PyTorch; otherwise eager PyTorch runs,
    in channels-last layout if ``channels_last`` (~1.7x faster on a CPU).

    Args:
        model: The classifier whose backbone gives the features.
        loader: Batches of ``(images, {head: targets})``, all images of one size.
        runtime: Device and autocast of the eager path.
        channels_last: Run eager PyTorch in channels-last memory layout.
        progress: Show a progress bar.
        cache_dir: Folder to keep the exported ``.onnx`` in for the next call (None: not kept).
        use_onnx: Allow ONNX Runtime on a CPU.
    """
    model.eval()
    forward = None  # chosen at the first batch, whose image size the ONNX graph fixes
    features, targets = [], []
    for images, batch_targets in tqdm(loader, desc="features", leave=False, disable=not progress):
        if forward is None:
            onnx_ok = use_onnx and runtime.device.type == "cpu"
            forward = _onnx_forward(model, images.shape[1:], cache_dir) if onnx_ok else None
            forward = forward or _eager_forward(model, runtime, channels_last)
        features.append(forward(images))
        targets.append(batch_targets)
    stacked = {k: torch.cat([t[k] for t in targets]) for k in targets[0]} if targets else {}
    return torch.cat(features) if features else torch.zeros(0, model.num_features), stacked


def _onnx_forward(
    model: Classifier, image_shape: torch.Size, cache_dir: Path | None
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    forward = onnx_feature_extractor(model.backbone, tuple(image_shape), cache_dir)
    if forward is not None:
        log.info("features: ONNX Runtime")
    return forward


def _eager_forward(
    model: Classifier, runtime: Runtime, channels_last: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(runtime.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with runtime.autocast():
            return model.forward_features(images).float().cpu()

    return forward


def cached_features(
    path: Path | None,
    compute: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Load features from ``path`` if a previous run stored them, else compute and store."""
    if path is not None and path.is_file():
        data = safetensors.torch.load_file(str(path))
        return data.pop("features"), {k.removeprefix("target/"): v for k, v in data.items()}
    features, targets = compute()
    if path is not None:
        tensors = {"features": features, **{f"target/{k}": v for k, v in targets.items()}}
        atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    return features, targets


def fit_heads(
    model: Classifier,
    features: torch.Tensor,
    targets: dict[str, torch.Tensor],
    objective: Objective,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> dict[str, float]:
    """Fit every head on fixed features with full-batch L-BFGS (L2-regularised); return the
    final training loss of each head."""
    model.eval()  # no dropout: the probe is a deterministic convex fit for linear heads
    return {
        name: _fit_head(
            head, features, targets[name], objective.losses[name], weight_decay, max_iter
        )
        for name, head in model.heads.items()
    }


def _fit_head(
    head: torch.nn.Module,
    features: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weight_decay: float,
    max_iter: int,
) -> float:
    params = list(head.parameters())
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(head(features), target)
        loss = loss + weight_decay * sum((p**2).sum() for p in params if p.ndim > 1)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(loss_fn(head(features), target))


def run_probe(
    model: Classifier,
    loaders: Loaders,
    objective: Objective,
    runtime: Runtime,
    out_dir: Path,
    train_cfg: Any,
    progress: bool,
) -> tuple[Validation, dict[str, float]]:
    """Fit the heads on cached features of the frozen backbone; return its validation and
    each head's final training loss."""
    cache = out_dir / "features" if runtime.is_main and not runtime.distributed else None
    features, targets = cached_features(
        cache / "train.safetensors" if cache else None,
        lambda: extract_features(
            model, loaders.train_plain, runtime, train_cfg.channels_last, progress, cache
        ),
    )
    losses = fit_heads(
        model,
        features.to(runtime.device),
        {k: v.to(runtime.device) for k, v in targets.items()},
        objective,
    )
    val = validate(model, loaders.val, objective, runtime, train_cfg.channels_last)
    return val, losses
