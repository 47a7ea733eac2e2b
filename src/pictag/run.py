"""The run folder, and the one module that reads and writes it.

A run folder is what training hands to everything after it:

    model.safetensors  the weights (their id in the file's metadata, ``pictag_id``)
    val_outputs.safetensors  the saved model's validation probabilities and targets, which the
                       decision parameters are tuned on (same ``pictag_id``)
    pictag.json        config, heads and label names, each head's decision parameters
                       (thresholds), preprocessing, metrics; ``schema_version``
    splits.csv         image,split of every image the run used (see pictag.data.split_file
                       for its path rule)
    config.resolved.json  the config the run started with, which ``--resume`` reads
    last/              the resumable training state (see pictag.training.checkpoint)
    model.onnx         the exported model, used for prediction on a CPU when up to date

Everything else gets typed objects from here (:class:`RunInfo`, :class:`LoadedRun`, a
:class:`~pictag.config.Config`, split name -> image paths) and never parses ``pictag.json`` or
``splits.csv`` itself. ``checkpoint_id`` changes whenever the weights or the decision
parameters change, so an export made before a re-tuning is recognised as stale.
"""

from __future__ import annotations

import json
import logging
import platform
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import safetensors.torch
import timm
import torch

from pictag.config import Config, HeadConfig, ModelConfig, config_from_dict, config_to_dict
from pictag.data.schema import Head, Sample
from pictag.data.split_file import SPLITS, SplitError, read_split_paths, save_splits
from pictag.data.transforms import Preprocess
from pictag.fileio import atomic_write, write_json
from pictag.heads import Params, get_kind
from pictag.models.backbone import create_backbone
from pictag.models.classifier import Classifier
from pictag.models.onnx_features import first_line
from pictag.models.onnx_runner import OnnxRunner
from pictag.version import __version__

WEIGHTS_FILE = "model.safetensors"
META_FILE = "pictag.json"
SPLITS_FILE = "splits.csv"
RESUME_CONFIG_FILE = "config.resolved.json"  # written before the first epoch, for --resume
VAL_OUTPUTS_FILE = "val_outputs.safetensors"  # validation probabilities of the saved model
ONNX_FILE = "model.onnx"  # the default export path inside a run folder
# 1: multilabel thresholds under "thresholds" (pictag 0.1 before head kinds owned decisions);
# 2: every head's decision parameters under "decisions".
SCHEMA_VERSION = 2

logger = logging.getLogger(__name__)
ValOutputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # probs, targets per head


@dataclass
class RunInfo:
    """Everything in a run folder's ``pictag.json``, without the model.

    Attributes:
        heads: Head name -> head (kind and labels).
        preprocess: The eval preprocessing.
        params: Head name -> decision parameters, every head present (defaults filled in).
        config: The training config.
        meta: The whole document, for the few fields above not named here (metrics, epoch).
    """

    heads: dict[str, Head]
    preprocess: Preprocess
    params: dict[str, Params]
    config: Config
    meta: dict[str, Any]

    @property
    def checkpoint_id(self) -> str | None:
        """Changes whenever the weights or the decision parameters change."""
        return self.meta.get("checkpoint_id")


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
    source = model_cfg.pretrained if pretrained is None else pretrained
    backbone, pre = create_backbone(
        model_cfg.backbone,
        pretrained=False if source == "none" else source,
        image_size=model_cfg.image_size,
        drop_path_rate=model_cfg.drop_path_rate,
    )
    hidden = {name: cfg.hidden for name, cfg in head_cfgs.items()}
    sizes = {name: head.num_labels for name, head in heads.items()}
    return Classifier(backbone, sizes, model_cfg.drop_rate, hidden), pre


def default_params(heads: Mapping[str, Head], config: Config) -> dict[str, Params]:
    """Each head's decision parameters before any tuning (its kind's defaults)."""
    return {
        name: get_kind(head.kind).default_params(head, config.heads.get(name, HeadConfig()))
        for name, head in heads.items()
    }


def run_meta(
    config: Config,
    heads: dict[str, Head],
    pre: Preprocess,
    params: Mapping[str, Params] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document stored beside the weights; heads left out of ``params`` get their
    kind's default decision parameters."""
    params = {**default_params(heads, config), **(params or {})}
    return {
        "format": "pictag-run",
        "schema_version": SCHEMA_VERSION,
        "config": config_to_dict(config),
        "heads": [head.to_dict() for head in heads.values()],
        "decisions": {name: dict(value) for name, value in params.items()},
        "preprocess": pre.to_dict(),
        "versions": {
            "pictag": __version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        **(extra or {}),
    }


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
    with safetensors.safe_open(str(path), framework="numpy") as handle:
        if (handle.metadata() or {}).get("pictag_id") != _read_meta(run_dir).get("weights_id"):
            return None
        arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    probs = {k.partition("/")[2]: v for k, v in arrays.items() if k.startswith("probs/")}
    targets = {k.partition("/")[2]: v for k, v in arrays.items() if k.startswith("targets/")}
    return probs, targets


def write_params(run_dir: str | Path, params: Mapping[str, Params]) -> str:
    """Store tuned decision parameters (merged over the stored ones) in ``pictag.json``,
    atomically, under a new ``checkpoint_id``; everything else in the file is kept.

    Returns:
        The new checkpoint id.
    """
    meta_path = Path(run_dir) / META_FILE
    meta = _read_meta(Path(run_dir))
    stored = _stored_params(meta)
    meta["decisions"] = {**stored, **{name: dict(value) for name, value in params.items()}}
    meta.pop("thresholds", None)
    meta.update(format="pictag-run", schema_version=SCHEMA_VERSION)
    meta["checkpoint_id"] = uuid.uuid4().hex
    write_json(meta_path, meta)
    return meta["checkpoint_id"]


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read a run folder's ``pictag.json`` (heads, preprocessing, decisions, config) without
    building the model -- all that a caller running an exported copy of it needs.

    Raises:
        FileNotFoundError: Not a run folder.
        ValueError: Written by a newer pictag, or not readable; the message says what to do.
    """
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    try:
        heads = {h["name"]: Head.from_dict(h) for h in meta["heads"]}
        config = config_from_dict(meta["config"])
        preprocess = Preprocess.from_dict(meta["preprocess"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{run_dir / META_FILE} cannot be read ({type(err).__name__}: {err}); retrain the "
            "run, or evaluate it with the pictag version that wrote it"
        ) from None
    params = default_params(heads, config)
    for name, stored in _stored_params(meta).items():
        if name in params:
            params[name] = {**params[name], **stored}
    return RunInfo(heads=heads, preprocess=preprocess, params=params, config=config, meta=meta)


def _read_meta(run_dir: Path) -> dict[str, Any]:
    meta_path, weights_path = run_dir / META_FILE, run_dir / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a pictag run folder: it needs {META_FILE} and {WEIGHTS_FILE} "
            "(written by `pictag train --out RUN_DIR`)"
        )
    meta = _read_json(meta_path)
    version = meta.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"{meta_path} has schema_version {version!r}, newer than this pictag "
            f"({__version__}) reads ({SCHEMA_VERSION}); upgrade pictag to use this run"
        )
    return meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); retrain the run") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} holds no JSON object; retrain the run")
    return document


def _stored_params(meta: Mapping[str, Any]) -> dict[str, Params]:
    """The stored decision parameters; schema 1 kept only multilabel thresholds."""
    if "decisions" in meta:
        return {name: dict(value) for name, value in meta["decisions"].items()}
    return {name: {"thresholds": list(v)} for name, v in meta.get("thresholds", {}).items()}


def splits_path(run_dir: str | Path) -> Path:
    """The run's split file, for a config's ``data.split_file`` (that option reads it by the
    same path rule as :func:`read_splits`)."""
    return Path(run_dir) / SPLITS_FILE


def write_splits(run_dir: str | Path, splits: Mapping[str, list[Sample]]) -> None:
    """Store the split a run uses (atomically, image paths absolute), so that evaluation, the
    export's parity check and a resumed run see exactly the same images."""
    save_splits(dict(splits), splits_path(run_dir))


def read_splits(run_dir: str | Path) -> dict[str, list[Path]]:
    """The run's split, its entries resolved as :func:`pictag.data.split_file.entry_path` says.

    Returns:
        ``train``, ``val`` and ``test`` (each present, maybe empty) -> resolved image paths, in
        file order.

    Raises:
        FileNotFoundError: The run has no split file.
        ValueError: The split file has bad rows; the message names them and what to do.
    """
    path = splits_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing, so the run's splits are unknown; `pictag train` writes it"
        )
    try:
        listed = read_split_paths(path)
    except SplitError as err:
        raise SplitError(
            f"{err}\n(`pictag train` wrote {SPLITS_FILE}: fix the rows named, or train again)"
        ) from None
    result: dict[str, list[Path]] = {name: [] for name in SPLITS}
    for image, split in listed.items():
        result[split].append(image)
    return result


def write_resume_config(run_dir: str | Path, config: Config) -> None:
    """Store the config a run starts with (atomically: a kill while rewriting it on resume must
    not leave the run unresumable)."""
    write_json(Path(run_dir) / RESUME_CONFIG_FILE, {"config": config_to_dict(config)})


def read_resume_config(run_dir: str | Path) -> Config:
    """The config to resume a run with: the one it started with, reading the run's own split.

    It comes from ``config.resolved.json``, or from ``pictag.json`` in a run from before that
    file was written; ``data.split_file`` is set to the run's ``splits.csv``, so the resumed run
    trains on the same images in the same splits.

    Raises:
        FileNotFoundError: Neither file is in ``run_dir``.
        ValueError: The file is not valid JSON or holds no valid config.
    """
    run_dir = Path(run_dir)
    source = run_dir / RESUME_CONFIG_FILE
    if source.is_file():
        document = _read_json(source)
    else:
        source = run_dir / META_FILE
        document = _read_meta(run_dir)
    try:
        config = config_from_dict(document["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{source} holds no usable config ({type(err).__name__}: {err}); train the run "
            "again without --resume"
        ) from None
    config.data.split_file = str(splits_path(run_dir))
    return config


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder (no pretrained download: the weights are all here)."""
    info = read_run_info(run_dir)
    model, _ = build_model(info.config.model, info.heads, info.config.heads, pretrained="none")
    state = safetensors.torch.load_file(str(Path(run_dir) / WEIGHTS_FILE), device=str(device))
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(**vars(info), model=model)


def stale_reason(path: Path, run_dir: Path, meta: Mapping[str, Any], runner: OnnxRunner) -> str:
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
    """The runner of ``RUN_DIR/model.onnx`` when it is up to date with the run, else None
    (the reason is logged).

    Args:
        run_dir: The run folder.
        meta: Its ``pictag.json`` document (as :func:`pictag.run.load_run` read it).
    """
    run_dir = Path(run_dir)
    path = run_onnx_path(run_dir)
    if not path.is_file():
        return None
    try:
        runner = OnnxRunner.load(path)
    except ImportError as error:
        logger.info("onnxruntime unavailable (%s): predicting with eager PyTorch", error)
        return None
    except Exception as error:  # onnxruntime raises its own, unexported exception types
        logger.warning(
            "cannot load %s (%s): predicting with eager PyTorch", path, first_line(error)
        )
        return None
    reason = stale_reason(path, run_dir, meta, runner)
    if reason:
        logger.warning(
            "%s is out of date (%s): predicting with eager PyTorch; run `pictag export %s` "
            "to refresh it",
            path,
            reason,
            run_dir,
        )
        return None
    return runner
