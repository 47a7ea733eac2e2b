"""A run's model over a list of samples: the eval batches (decoded on threads one batch ahead of
the model), and inference that runs the backbone in ONNX Runtime on a CPU when an export is at
hand or pays for itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from pictag.data.dataset import ImageDataset
from pictag.data.schema import Sample
from pictag.data.transforms import eval_crop, eval_transform, normalized_batch
from pictag.evaluation.inference import predict_logits, probabilities
from pictag.evaluation.prefetch import DECODE_THREADS, batches, prefetched
from pictag.models.onnx_features import onnx_feature_extractor
from pictag.run import LoadedRun


def eval_loader(run: LoadedRun, samples: list[Sample]) -> DataLoader:
    """Batches of ``(images, targets)`` of ``samples`` under the run's eval preprocessing."""
    pre, cfg = run.preprocess, run.config
    dataset = ImageDataset(
        samples, run.heads, pre, eval_transform(pre), max_pixels=cfg.data.max_pixels
    )
    device = next(run.model.parameters()).device
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        num_workers=cfg.train.workers,
        pin_memory=device.type == "cuda",
    )


Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def eval_batches(run: LoadedRun, samples: list[Sample]) -> Iterator[Batch]:
    """Batches of ``(images, targets)`` of ``samples`` under the run's eval preprocessing, as
    :func:`eval_loader` gives them (bit for bit), made faster on the CPU: with ``train.workers``
    0 (the default) the images of the next batch decode on :data:`DECODE_THREADS` threads while
    the model runs the current one, and each batch is normalised at once in numpy instead of
    image by image in torch (1,400 photos of 224 px, 2 cores: the loader alone took 2.5-3.6 s,
    on the model's own thread, of a 16-18 s pass). With worker processes the DataLoader runs
    them.
    """
    if run.config.train.workers > 0:
        yield from eval_loader(run, samples)
        return
    pre = run.preprocess
    dataset = ImageDataset(
        samples, run.heads, pre, eval_crop(pre), max_pixels=run.config.data.max_pixels
    )

    def finish(items: list[Batch]) -> Batch:
        images, targets = default_collate(items)
        return normalized_batch(images, pre), targets

    chunks = batches(range(len(dataset)), run.config.train.batch_size)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        yield from prefetched(dataset.__getitem__, chunks, pool, finish)


def infer(
    run: LoadedRun,
    samples: list[Sample],
    tta: bool = False,
    progress: bool = False,
    run_dir: Path | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and targets of ``samples`` under the run's eval preprocessing.

    On a CPU the backbone runs in ONNX Runtime (several times faster than eager PyTorch) when
    ``RUN_DIR/features`` holds an export that agrees with the run's backbone (a linear probe's
    always does), or when there are enough images for a new export to pay for itself.
    """
    device = next(run.model.parameters()).device
    model: torch.nn.Module = run.model
    if tta and len(run.model.dense):
        raise ValueError(
            "--tta averages the outputs of mirrored images, which would mirror the boxes of "
            f"head(s) {', '.join(run.model.dense)}: evaluate without --tta"
        )
    fast = _onnx_model(run, len(samples) * (2 if tta else 1), run_dir) if run_dir else None
    channels_last = run.config.train.channels_last and fast is None
    if channels_last:
        run.model.to(memory_format=torch.channels_last)
    loader = eval_batches(run, samples)
    total = -(-len(samples) // run.config.train.batch_size)
    logits, targets = predict_logits(
        fast or model, loader, device, tta, channels_last, progress, total
    )
    return probabilities(run.heads, logits), targets


# Images from which exporting the backbone pays, measured for Lite0 (the default): on 2 quiet
# AMD EPYC cores an export and parity check took 1.3-1.6 s (TorchScript with the padding fixed),
# and ONNX Runtime saved ~0.03 s an image against eager channels-last (~87 vs ~23 img/s): even
# at ~50 images. A model whose trace is refused (ViT) goes through torch.export, ~19 s.
EXPORT_FROM_IMAGES = 100


def _onnx_model(run: LoadedRun, images: int, run_dir: Path) -> torch.nn.Module | None:
    """The run's model with its backbone in ONNX Runtime, or None (GPU, no onnxruntime, no
    agreeing export and too few images to make one)."""
    if next(run.model.parameters()).device.type != "cpu" or len(run.model.dense):
        return None  # dense heads read feature maps, which the exported backbone does not give
    extractor = onnx_feature_extractor(
        run.model.backbone,
        (3, *run.preprocess.size),
        run_dir / "features",
        export=images >= EXPORT_FROM_IMAGES,
    )
    return None if extractor is None else _FeatureHeads(extractor, run.model)


class _FeatureHeads(torch.nn.Module):
    """``images -> {head: logits}``: backbone features from ``extract``, heads in PyTorch."""

    def __init__(self, extract: Callable[[torch.Tensor], torch.Tensor], model: Any) -> None:
        super().__init__()
        self.extract, self.model = extract, model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_heads(self.extract(images))
