"""Pooled backbone features through ONNX Runtime, the fastest runtime on a CPU.

On a 2-core CPU, ONNX Runtime computes EfficientNet-Lite0 features 3-4x faster than eager
PyTorch (``benchmarks/feature_extraction.py``), so the linear probe extracts its features here
when it can. Everything degrades gracefully: without onnx/onnxruntime, or when a model does not
export or its exported graph disagrees with eager PyTorch, :func:`onnx_feature_extractor`
returns None and the caller keeps eager PyTorch.

The backbone is exported by TorchScript first, its TensorFlow-style "same" padding fixed for the
input size (:mod:`pictag.models.static_padding`), and by ``torch.export`` when that fails or the
trace may depend on the input (as ViT's size checks do): on 2 cores TorchScript exported Lite0
in ~1 s against ~19 s, and its graph ran as fast in ONNX Runtime (ResNet-18, MobileNetV3 and
ConvNeXt-atto: 0.6-0.8 s against 9-18 s, as fast or faster).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from pictag.models.onnx_export import (
    EXPORT_ORDER,
    INPUT_NAME,
    export_backbone_onnx,
    first_line,
)
from pictag.models.onnx_runner import (
    Streams,
    file_stamp,
    pooled,
    session_streams,
    stream_shares,
)
from pictag.models.onnx_session import create_session

PARITY_RTOL = 1e-3  # max |onnx - eager| allowed, as a fraction of the largest |eager feature|

logger = logging.getLogger(__name__)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def onnx_feature_extractor(
    backbone: nn.Module,
    input_size: tuple[int, int, int],
    cache_dir: Path | None,
    export: bool = True,
) -> OnnxFeatures | None:
    """A function ``images [B, 3, H, W] -> features [B, F]`` (float32, CPU) run by ONNX Runtime.

    The exported file is ``cache_dir/backbone_{H}x{W}.onnx`` and is reused when it still agrees
    with ``backbone``; without ``cache_dir`` it lives in a temporary folder for the export only.

    Args:
        backbone: A headless model on the CPU whose ``forward`` gives pooled features.
        input_size: ``(3, H, W)`` of the images the function will be given.
        cache_dir: Folder for the ``.onnx`` file, or None.
        export: Export when no cached file agrees with ``backbone``; False: only reuse one.

    Returns:
        The function, or None (with the reason logged) when onnx/onnxruntime is missing, the
        model does not export, or ONNX Runtime's features differ from eager PyTorch's.
    """
    try:
        import onnx  # noqa: F401  (the exporters need it; fail here, not halfway through)
        import onnxruntime
    except ImportError as error:
        logger.info("ONNX Runtime unavailable (%s): features use eager PyTorch", error)
        return None
    if any(p.device.type != "cpu" for p in backbone.parameters()):
        logger.info("backbone is not on the CPU: features use eager PyTorch")
        return None
    input_size = tuple(int(v) for v in input_size)
    if cache_dir is not None:
        return _cached_session(onnxruntime, backbone, input_size, Path(cache_dir), export)
    if not export:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        # The session holds the model in memory, so the file may go once it is built.
        return _export_session(onnxruntime, backbone, input_size, Path(tmp) / "backbone.onnx")


def _cached_session(
    ort: ModuleType,
    backbone: nn.Module,
    input_size: tuple[int, ...],
    cache_dir: Path,
    export: bool = True,
) -> OnnxFeatures | None:
    path = cache_dir / f"backbone_{input_size[1]}x{input_size[2]}.onnx"
    if path.is_file():
        extractor = _session(ort, path)
        if extractor is not None and _agrees(extractor, backbone, input_size, quiet=True):
            return extractor
        if export:
            logger.info("%s is stale or unreadable: exporting again", path)
    return _export_session(ort, backbone, input_size, path) if export else None


def _export_session(
    ort: ModuleType, backbone: nn.Module, input_size: tuple[int, ...], path: Path
) -> OnnxFeatures | None:
    """Export by TorchScript (padding fixed, input-independent traces only), else by
    ``torch.export``: the first graph that loads and agrees with eager PyTorch, or None
    (logged)."""
    for dynamo in EXPORT_ORDER:
        if not _export(backbone, input_size, path, dynamo):
            continue
        extractor = _session(ort, path)
        if extractor is not None and _agrees(extractor, backbone, input_size, quiet=not dynamo):
            return extractor
        if not dynamo:
            logger.info("the TorchScript graph does not agree with eager PyTorch: torch.export")
    logger.info("features use eager PyTorch")
    return None


def _export(backbone: nn.Module, input_size: tuple[int, ...], path: Path, dynamo: bool) -> bool:
    try:
        export_backbone_onnx(backbone, input_size, path, dynamo=dynamo)
        return True
    except Exception as error:  # exporters raise many types; any means "try the next"
        kind = "torch.export" if dynamo else "TorchScript"
        logger.info("ONNX export with %s failed: %s", kind, first_line(error))
        return False


def _session(ort: ModuleType, path: Path) -> OnnxFeatures | None:
    stamp = file_stamp(path)  # before reading: a later change shows as a new stamp
    try:
        session = create_session(ort, path)
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        logger.info("ONNX Runtime cannot load %s: %s", path, first_line(error))
        return None
    return OnnxFeatures(session, path, tuple(session.get_inputs()[0].shape[1:]), stamp)


@dataclass(eq=False)
class OnnxFeatures:
    """``images [B, 3, H, W] -> features [B, F]`` by an ONNX Runtime session on torch's thread
    budget, and :meth:`concurrent` calls for a long pass over a loader.

    Attributes:
        session: The session the plain call runs in.
        path: Its file (gone for an export without a cache folder: then no streams).
        expected: The input's ``(3, H, W)``.
        stamp: The file's ``(size, mtime_ns)`` when the session was opened: streams open only
            on the same file (the one whose features were checked against PyTorch).
    """

    session: Any
    path: Path
    expected: tuple[int, ...]
    stamp: tuple[int, int] | None = None
    _streams: Streams | None = field(default=None, init=False, repr=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(self.session, images)

    def concurrent(self) -> tuple[FeatureFn, int]:
        """A call that ``count`` threads may make at once, and ``count``: one session per
        batch in flight on its share of the threads (:func:`stream_shares`), as ``predict``
        runs a model (``benchmarks/probe_speed.py``); the plain call, one at a time, with one
        thread, or when the file is gone (an export without a cache folder) or changed."""
        try:
            streams = session_streams(self._streams, self.path, self.stamp)
        except Exception as error:  # unexported onnxruntime types: one call at a time
            logger.info("ONNX Runtime streams unavailable: %s", first_line(error))
            streams = None
        if streams is None:
            return self, 1
        self._streams = streams
        return pooled(streams[1], self._run), len(stream_shares(streams[0]))

    def _run(self, session: Any, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != self.expected:
            shape = tuple(images.shape)
            raise ValueError(f"expected images [B, {self.expected}], got {shape}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {INPUT_NAME: array})[0])


def _agrees(
    extractor: FeatureFn, backbone: nn.Module, input_size: tuple[int, ...], quiet: bool = False
) -> bool:
    """Whether ONNX Runtime matches eager PyTorch on one random batch (a stale cached file or
    a mistranslated operator would not)."""
    # Batch 3, not the export's 2: a graph with the batch size folded in fails here.
    images = torch.randn(3, *input_size, generator=torch.Generator().manual_seed(0))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            expected = backbone(images).float()
        got = extractor(images)
    except Exception as error:
        logger.info("ONNX parity check could not run: %s", first_line(error))
        return False
    finally:
        backbone.train(was_training)
    same_shape = got.shape == expected.shape
    diff = float((got - expected).abs().max()) if same_shape else float("inf")
    scale = float(expected.abs().max())
    if diff <= PARITY_RTOL * scale + 1e-6:
        return True
    if not quiet:
        logger.warning(
            "ONNX Runtime features differ from PyTorch's (max |diff| %.3g at scale %.3g): "
            "features use eager PyTorch",
            diff,
            scale,
        )
    return False
