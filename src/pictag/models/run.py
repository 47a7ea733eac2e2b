"""A trained model on disk: ``model.safetensors`` (weights only) + ``pictag.json`` (everything
needed to rebuild and use it: config, heads, label names, thresholds, preprocessing, metrics).

Evaluation, export and serving load runs through here, so they reproduce training's pipeline.
"""

from __future__ import annotations

import json
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch

from pictag.config import Config, HeadConfig, ModelConfig, config_from_dict, config_to_dict
from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.fileio import atomic_write, write_json
from pictag.models.backbone import create_backbone
from pictag.models.classifier import Classifier
from pictag.version import __version__

WEIGHTS_FILE = "model.safetensors"
META_FILE = "pictag.json"


@dataclass
class RunInfo:
    """Everything in a run folder's ``pictag.json``, without the model."""

    heads: dict[str, Head]
    preprocess: Preprocess
    thresholds: dict[str, list[float]]
    config: Config
    meta: dict[str, Any]


@dataclass
class LoadedRun:
    """A model read back from a run folder."""

    model: Classifier
    heads: dict[str, Head]
    preprocess: Preprocess
    thresholds: dict[str, list[float]]
    config: Config
    meta: dict[str, Any]


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


def run_meta(
    config: Config,
    heads: dict[str, Head],
    pre: Preprocess,
    thresholds: dict[str, list[float]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document stored beside the weights."""
    return {
        "format": "pictag-run/1",
        "config": config_to_dict(config),
        "heads": [head.to_dict() for head in heads.values()],
        "thresholds": thresholds,
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
    run_dir: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write weights then metadata, each atomically; both carry one id so a mismatch is caught."""
    run_dir = Path(run_dir)
    checkpoint_id = uuid.uuid4().hex
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(
        run_dir / WEIGHTS_FILE,
        lambda tmp: safetensors.torch.save_file(tensors, str(tmp), {"pictag_id": checkpoint_id}),
    )
    write_json(run_dir / META_FILE, {**meta, "checkpoint_id": checkpoint_id})


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read a run folder's ``pictag.json`` (heads, preprocessing, thresholds, config) without
    building the model -- all that a caller running an exported copy of it needs."""
    run_dir = Path(run_dir)
    meta_path, weights_path = run_dir / META_FILE, run_dir / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a pictag run folder: it needs {META_FILE} and {WEIGHTS_FILE} "
            "(written by `pictag train --out RUN_DIR`)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return RunInfo(
        heads={h["name"]: Head.from_dict(h) for h in meta["heads"]},
        preprocess=Preprocess.from_dict(meta["preprocess"]),
        thresholds={k: list(v) for k, v in meta.get("thresholds", {}).items()},
        config=config_from_dict(meta["config"]),
        meta=meta,
    )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder (no pretrained download: the weights are all here)."""
    info = read_run_info(run_dir)
    model, _ = build_model(info.config.model, info.heads, info.config.heads, pretrained="none")
    state = safetensors.torch.load_file(str(Path(run_dir) / WEIGHTS_FILE), device=str(device))
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(model=model, **vars(info))
