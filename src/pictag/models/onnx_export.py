"""The ONNX files pictag writes: a headless backbone (``images [B, 3, H, W] -> features [B, F]``)
for fast feature extraction, and whole models for ``pictag export``, each with a dynamic batch
axis and the spatial size fixed.

Two exporters: ``torch.export`` (``dynamo=True``), torch's supported path, and the deprecated
TorchScript one. With the spatial size fixed, ``torch.export`` folds TensorFlow-style "same"
padding into constants, where TorchScript would record it as shape arithmetic run on every
call, so TorchScript exports a copy whose padding is fixed (:mod:`pictag.models.static_padding`);
and a trace that warns it may depend on the input (Python numbers or branches taken from tensor
values) is refused rather than written.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pictag.fileio import atomic_write

OPSET = 18  # the dynamo exporter's native opset: a lower one costs a version conversion
INPUT_NAME, OUTPUT_NAME = "images", "features"
# The order to try the exporters in, as export_onnx's `dynamo`. TorchScript first (on the copy
# with fixed padding, input-independent traces only): it exports Lite0 in ~1 s against ~19 s by
# torch.export, and its graph runs as fast; torch.export for what TorchScript refuses.
EXPORT_ORDER = (False, True)

# The exporters log every graph pass at INFO and a failed capture at WARNING, dozens of lines
# that say nothing to a user whose run carries on either way (this module logs the outcome).
_EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch.fx")


def export_backbone_onnx(
    backbone: nn.Module,
    input_size: tuple[int, int, int],
    path: Path,
    dynamo: bool = True,
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
        dynamo: Use the ``torch.export``-based exporter, else the TorchScript one (on a copy
            with fixed padding, refusing a trace that may depend on the input).

    Raises:
        ValueError: TorchScript's tracer warned that the trace may depend on the input.
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
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    dynamo: bool,
    names: dict[str, list[str]],
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
    # Imported here: it imports timm, which running model.onnx (importing this module) never needs.
    from pictag.models.static_padding import with_static_padding

    module = with_static_padding(module, tuple(example.shape[1:]))
    dynamic_axes = {name: {0: "batch"} for name in names["input_names"] + names["output_names"]}
    with warnings.catch_warnings(record=True) as caught:
        # Chosen knowingly: keep its deprecation and tracer warnings from the user's console.
        warnings.simplefilter("always")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            **names,
        )
    traced = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if traced:  # a value read from a tensor was frozen into the graph: it may not generalise
        raise ValueError(f"the trace may depend on the input: {traced[0].message}")


def first_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, for one-line log messages."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
