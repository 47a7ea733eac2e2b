"""Pooled backbone features through ONNX Runtime, the fastest runtime on a CPU.

On a 2-core CPU, ONNX Runtime computes EfficientNet-Lite0 features 3-4x faster than eager
PyTorch (``benchmarks/feature_extraction.py``), so the linear probe extracts its features here
when it can. Everything degrades gracefully: without onnx/onnxruntime, or when a model does not
export or its exported graph disagrees with eager PyTorch, :func:`onnx_feature_extractor`
returns None and the caller keeps eager PyTorch.

Export uses torch's default ``torch.export``-based exporter (``dynamo=True``): it is the
supported path, and with the spatial size fixed it folds TensorFlow-style "same" padding into
constants (Lite0: 93 nodes, against 628 from the TorchScript exporter, which computes the
padding from the input shape at run time). Models that ``torch.export`` cannot capture
(Python control flow on tensor values) fall back to the deprecated TorchScript exporter.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from pictag.fileio import atomic_write

OPSET = 18  # the dynamo exporter's native opset: a lower one costs a version conversion
INPUT_NAME, OUTPUT_NAME = "images", "features"
PARITY_RTOL = 1e-3  # max |onnx - eager| allowed, as a fraction of the largest |eager feature|

# The exporters log every graph pass at INFO and a failed capture at WARNING, dozens of lines
# that say nothing to a user whose run carries on either way (this module logs the outcome).
_EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch.fx")

logger = logging.getLogger(__name__)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def export_backbone_onnx(
    backbone: nn.Module, input_size: tuple[int, int, int], path: Path, dynamo: bool = True
) -> Path:
    """Write the headless backbone (``images [B, 3, H, W] -> features [B, F]``) as one ONNX
    file with a dynamic batch axis; ``H`` and ``W`` stay fixed so the graph can fold them.

    Args:
        backbone: A model whose ``forward`` gives pooled features; exported in eval mode (its
            training flag is restored afterwards).
        input_size: ``(3, H, W)`` of the input.
        path: Where to write; written atomically, so a crash never leaves half a file.
        dynamo: Use the ``torch.export``-based exporter (else the TorchScript one).

    Returns:
        ``path``.

    Raises:
        Exception: Whatever the exporter raises for a model it cannot export.
    """
    path = Path(path)
    atomic_write(
        path,
        lambda tmp: export_onnx(backbone, input_size, tmp, INPUT_NAME, [OUTPUT_NAME], dynamo),
    )
    return path


def export_onnx(
    module: nn.Module,
    input_size: tuple[int, int, int],
    path: Path,
    input_name: str,
    output_names: list[str],
    dynamo: bool = True,
) -> None:
    """Write ``module`` (one image batch in, one or more tensors out) as one ONNX file whose
    batch axis is dynamic; it is written in place, so callers wanting atomicity pass a
    temporary path.

    Args:
        module: Exported in eval mode (its training flag is restored afterwards).
        input_size: ``(3, H, W)`` of the input.
        path: Where to write.
        input_name: Name of the graph input.
        output_names: One name per output, in the order ``module`` returns them.
        dynamo: Use the ``torch.export``-based exporter (else the TorchScript one).

    Raises:
        Exception: Whatever the exporter raises for a model it cannot export.
    """
    # Batch 2: a batch of 1 would be specialised. Own generator: leave the global RNG alone.
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    names = {"input_names": [input_name], "output_names": list(output_names)}
    was_training = module.training
    module.eval()
    try:
        with _quiet(_EXPORTER_LOGGERS):
            _export(module, example, Path(path), dynamo, names)
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Raise the given loggers to ERROR for the duration, then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool, names: dict[str, list[str]]
) -> None:
    if dynamo:
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=False,  # one self-contained file, weights included
            verbose=False,
            opset_version=OPSET,
            **names,
        )
        return
    dynamic_axes = {name: {0: "batch"} for name in names["input_names"] + names["output_names"]}
    with warnings.catch_warnings():
        # Chosen knowingly as the fallback: silence its deprecation and tracer warnings.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            **names,
        )


def onnx_feature_extractor(
    backbone: nn.Module,
    input_size: tuple[int, int, int],
    cache_dir: Path | None,
    export: bool = True,
) -> FeatureFn | None:
    """A function ``images [B, 3, H, W] -> features [B, F]`` (float32, CPU) run by ONNX Runtime.

    The exported file is ``cache_dir/backbone_{H}x{W}.onnx`` and is reused when it still agrees
    with ``backbone``; without ``cache_dir`` it lives in a temporary folder for the export only.

    Args:
        backbone: A headless model on the CPU whose ``forward`` gives pooled features.
        input_size: ``(3, H, W)`` of the images the function will be given.
        cache_dir: Folder for the ``.onnx`` file, or None.
        export: Export when no cached file agrees with ``backbone``; False: only reuse one
            (an export costs tens of seconds for Lite0 on 2 cores, more than a short pass saves).

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
) -> FeatureFn | None:
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
) -> FeatureFn | None:
    if not _export_any(backbone, input_size, path):
        return None
    extractor = _session(ort, path)
    if extractor is None or not _agrees(extractor, backbone, input_size):
        return None
    return extractor


def _export_any(backbone: nn.Module, input_size: tuple[int, ...], path: Path) -> bool:
    """Export with ``torch.export``, else TorchScript; False (logged) if neither works."""
    for dynamo in (True, False):
        try:
            export_backbone_onnx(backbone, input_size, path, dynamo=dynamo)
            return True
        except Exception as error:  # exporters raise many types; any means "use eager"
            kind = "torch.export" if dynamo else "TorchScript"
            logger.info("ONNX export with %s failed: %s", kind, first_line(error))
    logger.info("features use eager PyTorch")
    return False


def create_session(ort: ModuleType, path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` with pictag's settings (torch's thread count
    unless ``threads`` is given, errors-only logging).

    Raises:
        Exception: Whatever onnxruntime raises for a file it cannot load.
    """
    options = ort.SessionOptions()
    # By default, share torch's thread budget.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # a chain of convolutions has no parallel branches
    options.log_severity_level = 3  # errors only
    # Waiting threads sleep rather than spin: `predict` decodes the next batch on the same
    # cores meanwhile (2 cores: 91 vs 85 img/s end to end; the runtime alone 110 vs 112).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _session(ort: ModuleType, path: Path) -> FeatureFn | None:
    try:
        session = create_session(ort, path)
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        logger.info("ONNX Runtime cannot load %s: %s", path, first_line(error))
        return None
    expected = tuple(session.get_inputs()[0].shape[1:])

    def extract(images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images [B, {expected}], got {tuple(images.shape)}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {INPUT_NAME: array})[0])

    return extract


def _agrees(
    extractor: FeatureFn, backbone: nn.Module, input_size: tuple[int, ...], quiet: bool = False
) -> bool:
    """Whether ONNX Runtime matches eager PyTorch on one random batch (a stale cached file or
    a mistranslated operator would not)."""
    images = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
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


def first_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, for one-line log messages."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
