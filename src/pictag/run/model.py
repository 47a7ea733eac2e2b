"""A run's model: built from its config, its weights (with the validation outputs saved beside
them) written and read back, and its exported ``model.onnx`` used when up to date."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from pictag.config import HeadConfig, ModelConfig
from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.fileio import atomic_write, readable_safetensors, write_json
from pictag.heads import get_kind
from pictag.models.classifier import Classifier, dense_channels
from pictag.models.onnx_export import first_line
from pictag.models.onnx_runner import OnnxRunner
from pictag.models.openvino_runner import OpenVinoRunner
from pictag.run.meta import (
    META_FILE,
    ONNX_FILE,
    REREAD_FIX,
    VAL_OUTPUTS_FILE,
    WEIGHTS_FILE,
    RunInfo,
    read_meta_document,
    read_run_info,
)

logger = logging.getLogger(__name__)
RunnerT = TypeVar("RunnerT", OnnxRunner, OpenVinoRunner)
ValOutputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # probs, targets per head


@dataclass
class LoadedRun(RunInfo):
    """A model read back from a run folder."""

    model: Classifier | None = None


def build_model(
    model_cfg: ModelConfig,
    heads: dict[str, Head],
    head_cfgs: dict[str, HeadConfig],
    pretrained: str | None = None,
) -> tuple[Classifier, Preprocess]:
    """Backbone (with ``pretrained`` weights, default ``model_cfg.pretrained``) plus heads."""
    # Imported here: timm takes ~0.8 s to import and predicting from model.onnx never needs it.
    from pictag.models.backbone import create_backbone

    source = model_cfg.pretrained if pretrained is None else pretrained
    backbone, pre = create_backbone(
        model_cfg.backbone,
        pretrained=False if source == "none" else source,
        image_size=model_cfg.image_size,
        drop_path_rate=model_cfg.drop_path_rate,
    )
    hidden = {name: cfg.hidden for name, cfg in head_cfgs.items()}
    kinds = {name: get_kind(head.kind) for name, head in heads.items()}
    sizes = {name: h.num_labels for name, h in heads.items() if kinds[name].make_module is None}
    dense = {}
    if len(sizes) < len(heads):
        channels = dense_channels(backbone)
        dense = {
            name: kinds[name].make_module(channels, head.num_labels)
            for name, head in heads.items()
            if name not in sizes
        }
        pre = replace(pre, whole=True)  # boxes are scored on the whole image, never a crop
    model = Classifier(backbone, sizes, model_cfg.drop_rate, hidden, dense, list(heads))
    return model, pre


def save_model(
    run_dir: str | Path,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    val_outputs: ValOutputs | None = None,
) -> None:
    """Write weights, validation outputs and metadata, each atomically; all carry one id so a
    mismatch (a kill between two writes) is caught.

    Args:
        run_dir: The run folder.
        state_dict: The model's weights.
        meta: The ``pictag.json`` document (from :func:`run_meta`).
        val_outputs: The model's validation probabilities and targets, per head, which the
            decision parameters are tuned on once training ends.
    """
    run_dir = Path(run_dir)
    weights_id = uuid.uuid4().hex
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(
        run_dir / WEIGHTS_FILE,
        lambda tmp: safetensors.torch.save_file(tensors, str(tmp), {"pictag_id": weights_id}),
    )
    if val_outputs is not None:
        arrays = {f"probs/{k}": np.ascontiguousarray(v) for k, v in val_outputs[0].items()}
        arrays.update({f"targets/{k}": np.ascontiguousarray(v) for k, v in val_outputs[1].items()})
        atomic_write(
            run_dir / VAL_OUTPUTS_FILE,
            lambda tmp: safetensors.numpy.save_file(arrays, str(tmp), {"pictag_id": weights_id}),
        )
    write_json(run_dir / META_FILE, {**meta, "weights_id": weights_id, "checkpoint_id": weights_id})


def read_val_outputs(run_dir: str | Path) -> ValOutputs | None:
    """The validation outputs saved with the run's current weights, or None when there are
    none or they belong to other weights (a kill between writes; re-run the model then)."""
    run_dir = Path(run_dir)
    path = run_dir / VAL_OUTPUTS_FILE
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            if (handle.metadata() or {}).get("pictag_id") != read_meta_document(run_dir).get(
                "weights_id"
            ):
                return None
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except safetensors.SafetensorError:  # cut short (a partial copy): the model runs again
        return None
    probs = {k.partition("/")[2]: v for k, v in arrays.items() if k.startswith("probs/")}
    targets = {k.partition("/")[2]: v for k, v in arrays.items() if k.startswith("targets/")}
    return probs, targets


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder (no pretrained download: the weights are all here)."""
    info = read_run_info(run_dir)
    model, _ = build_model(info.config.model, info.heads, info.config.heads, pretrained="none")
    path = Path(run_dir) / WEIGHTS_FILE
    with readable_safetensors(path, REREAD_FIX):
        state = safetensors.torch.load_file(str(path), device=str(device))
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(**vars(info), model=model)


def stale_reason(
    path: Path, run_dir: Path, meta: Mapping[str, Any], runner: OnnxRunner | OpenVinoRunner
) -> str:
    """Why an exported file does not belong to the run's current model ('' when it does).

    Args:
        path: The exported file.
        run_dir: The run folder.
        meta: The run's ``pictag.json`` document.
        runner: The file, loaded.
    """
    exported = runner.metadata
    if path.stat().st_mtime_ns < (run_dir / WEIGHTS_FILE).stat().st_mtime_ns:
        return f"it is older than {WEIGHTS_FILE}"
    if exported.get("checkpoint_id") != meta.get("checkpoint_id"):
        return "it was exported from another checkpoint"
    run_heads = [(h["name"], h["kind"], list(h["labels"])) for h in meta["heads"]]
    onnx_heads = [(h["name"], h["kind"], list(h["labels"])) for h in exported.get("heads", [])]
    if run_heads != onnx_heads:
        return f"its heads or labels differ from {META_FILE}"
    if list(exported["preprocess"]["input_size"]) != list(meta["preprocess"]["input_size"]):
        return "its input size differs from the run's"
    return ""


def run_onnx_path(run_dir: str | Path) -> Path:
    """Where a run's exported ONNX model goes by default, and where prediction looks for it."""
    return Path(run_dir) / ONNX_FILE


def run_onnx_runner(run_dir: str | Path, meta: Mapping[str, Any]) -> OnnxRunner | None:
    """The ONNX Runtime runner of ``RUN_DIR/model.onnx`` when it is up to date with the run,
    else None (the reason is logged).

    Args:
        run_dir: The run folder.
        meta: Its ``pictag.json`` document (as :func:`pictag.run.load_run` read it).
    """

    def load(path: Path) -> OnnxRunner:
        return OnnxRunner.load(path, cache=True)  # opened by every predict, serve, evaluate

    return _up_to_date(run_dir, meta, load, "onnxruntime", "eager PyTorch")


def run_openvino_runner(
    run_dir: str | Path, meta: Mapping[str, Any], precision: str = "auto"
) -> OpenVinoRunner | None:
    """The OpenVINO runner of ``RUN_DIR/model.onnx`` when it is up to date with the run, else
    None (the reason is logged).

    Args:
        run_dir: The run folder.
        meta: Its ``pictag.json`` document.
        precision: ``auto`` (OpenVINO's default for the CPU) or ``f32``.
    """

    def load(path: Path) -> OpenVinoRunner:
        return OpenVinoRunner.load(path, precision)

    return _up_to_date(run_dir, meta, load, "openvino", "ONNX Runtime or eager PyTorch")


def _up_to_date(
    run_dir: str | Path,
    meta: Mapping[str, Any],
    load: Callable[[Path], RunnerT],
    runtime: str,
    fallback: str,
) -> RunnerT | None:
    """``load(RUN_DIR/model.onnx)`` when the file exists, loads and is up to date, else None;
    ``runtime`` and ``fallback`` name the runtime and what the caller uses instead in the log."""
    run_dir = Path(run_dir)
    path = run_onnx_path(run_dir)
    if not path.is_file():
        return None
    try:
        runner = load(path)
    except ImportError as error:
        logger.info("%s unavailable (%s): predicting with %s", runtime, error, fallback)
        return None
    except Exception as error:  # the runtimes raise their own, unexported exception types
        logger.warning(
            "%s cannot load %s (%s): predicting with %s", runtime, path, first_line(error), fallback
        )
        return None
    reason = stale_reason(path, run_dir, meta, runner)
    if reason:
        logger.warning(
            "%s is out of date (%s): predicting with %s; run `pictag export %s` to refresh it",
            path,
            reason,
            fallback,
            run_dir,
        )
        return None
    return runner
