"""Inference over a loader: logits per head, kept apart from the metrics.

As in airbench, one pass returns raw logits and the stacked targets; probabilities, metrics,
threshold tuning and the report are computed from them afterwards, so each can be checked (and
re-run) without touching the model again.

Test-time augmentation (``tta``) averages the logits of each image and of its horizontal flip.
That suits photos, whose content does not change when mirrored; it hurts on text, digits, road
signs and anything else with a left and a right (a mirrored ``b`` is a ``d``): leave it off there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pictag.heads import Head, get_kind

# Images per forward-only batch on a CPU (prediction, validation, the probe's features). On 2
# cores a batch of 8 runs as fast as one of 32 or faster: ONNX Runtime 0.99-1.13x and eager
# channels-last 1.06-1.53x for Lite0, ResNet-50, ConvNeXt-T, ViT-S and MobileNetV3-L at 224 px
# (random inputs), an eager Lite0 over 200 cached MIML photos 63.8 against 37.6 img/s: the
# activations stay in the caches.
CPU_BATCH = 8


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU; any other name is kept.

    Raises:
        ValueError: A CUDA device that this machine does not have.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    check_cuda_device(device)
    return device


def check_cuda_device(device: torch.device) -> None:
    """Refuse a CUDA device this machine lacks with a message that says what to use instead,
    before torch fails on it deep inside with "Found no NVIDIA driver".

    Raises:
        ValueError: No CUDA GPU here, or none with the device's index.
    """
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device}: this machine has no CUDA GPU that torch can use (no NVIDIA "
            "driver, or a CPU-only torch build); use the device cpu, or auto"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"device {device}: this machine has {count} CUDA GPU(s), numbered from 0; use "
            "cuda:0 up to cuda:" + str(count - 1)
        )


@torch.inference_mode()
def forward_logits(
    model: nn.Module, images: torch.Tensor, tta: bool = False, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """Logits of one batch ``[B, 3, H, W]`` already on the model's device, in float32.

    Args:
        model: Returns ``{head: logits}``; it should be in eval mode.
        images: Normalised images.
        tta: Average with the logits of the horizontally flipped images.
        channels_last: Feed the batch in channels-last memory format (faster convolutions;
            convert the model with ``model.to(memory_format=torch.channels_last)`` as well).
    """
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    logits = {name: value.float() for name, value in model(images).items()}
    if tta:
        flipped = model(images.flip(-1))
        logits = {name: (value + flipped[name].float()) / 2 for name, value in logits.items()}
    return logits


def predict_logits(
    model: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    tta: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    total: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run ``model`` over every batch of ``loader``.

    Args:
        model: Returns ``{head: logits}``; it is put in eval mode.
        loader: Yields ``(images, {head: targets})`` as :class:`pictag.data.dataset.ImageDataset`
            batches do, or bare image batches (the targets are then empty).
        device: Where the model is; batches are moved there.
        tta: Average the logits of each image and of its horizontal flip (photos only, see the
            module notes).
        channels_last: Feed batches channels-last (see :func:`forward_logits`).
        progress: Show a progress bar over batches.
        total: How many batches ``loader`` gives, for the progress bar when it has no length.

    Returns:
        ``({head: logits [N, C]}, {head: targets})``: float32 logits in loader order, and the
        targets stacked as the loader gave them (``[N]`` class indices or ``[N, L]`` rows). An
        empty loader gives two empty dicts.
    """
    model.eval()
    device = torch.device(device)
    logits: dict[str, list[np.ndarray]] = defaultdict(list)
    targets: dict[str, list[np.ndarray]] = defaultdict(list)
    bar = tqdm(loader, "predict", total, unit="batch", disable=not progress, leave=False)
    for batch in bar:
        images, batch_targets = batch if isinstance(batch, (list, tuple)) else (batch, {})
        images = images.to(device, non_blocking=True)
        for name, value in forward_logits(model, images, tta, channels_last).items():
            logits[name].append(value.cpu().numpy())
        for name, value in batch_targets.items():
            targets[name].append(np.asarray(value))
    return _stack(logits), _stack(targets)


def probabilities(
    heads: Mapping[str, Head], logits: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Logits -> probabilities with each head kind's activation.

    Args:
        heads: Head name -> head (its kind decides the activation).
        logits: Head name -> logits ``[N, C]``.

    Returns:
        Head name -> float32 probabilities ``[N, C]``.
    """
    return {
        name: get_kind(heads[name].kind).activate(torch.as_tensor(values)).numpy()
        for name, values in logits.items()
    }


def _stack(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate(values) for name, values in parts.items()}
