"""``pictag.json``: what a run is (heads, decisions, config, preprocessing), read and written
only here. ``schema_version`` 1 runs (multilabel thresholds only) load with their thresholds;
newer ones are refused."""

from __future__ import annotations

import json
import platform
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import safetensors
import torch

from pictag.config import Config, HeadConfig, config_from_dict, config_to_dict
from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.fileio import readable_safetensors, write_json
from pictag.heads import Params, get_kind
from pictag.version import __version__

WEIGHTS_FILE = "model.safetensors"
META_FILE = "pictag.json"
SPLITS_FILE = "splits.csv"
RESUME_CONFIG_FILE = "config.resolved.json"  # written before the first epoch, for --resume
VAL_OUTPUTS_FILE = "val_outputs.safetensors"  # validation probabilities of the saved model
ONNX_FILE = "model.onnx"  # the default export path inside a run folder
AUDIT_JSON = "audit.json"  # `pictag audit`'s findings; the report links to its page
AUDIT_HTML = "audit.html"
# 1: multilabel thresholds under "thresholds" (pictag 0.1 before head kinds owned decisions);
# 2: every head's decision parameters under "decisions".
SCHEMA_VERSION = 2


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
            # Read from the installed metadata: importing timm only for its version costs ~0.5 s.
            "timm": version("timm"),
            "python": platform.python_version(),
        },
        **(extra or {}),
    }


def write_params(run_dir: str | Path, params: Mapping[str, Params]) -> str:
    """Store tuned decision parameters (merged over the stored ones) in ``pictag.json``,
    atomically, under a new ``checkpoint_id``; everything else in the file is kept. The same
    parameters as stored leave the file (and its id) as it is.

    Returns:
        The new checkpoint id.
    """
    meta_path = Path(run_dir) / META_FILE
    meta = read_meta_document(Path(run_dir))
    stored = _stored_params(meta)
    decisions = {**stored, **{name: dict(value) for name, value in params.items()}}
    current = meta.get("format") == "pictag-run" and meta.get("schema_version") == SCHEMA_VERSION
    current = current and "weights_id" in meta and "thresholds" not in meta
    if current and meta.get("decisions") == decisions and meta.get("checkpoint_id"):
        # The same decisions again (a resumed run that had ended): a new id would only make
        # its model.onnx and report look out of date.
        return meta["checkpoint_id"]
    meta["decisions"] = decisions
    meta.pop("thresholds", None)
    meta.update(format="pictag-run", schema_version=SCHEMA_VERSION)
    # The weights keep their id (a schema-1 run's checkpoint id was its weights' id).
    meta.setdefault("weights_id", meta.get("checkpoint_id"))
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
    meta = read_meta_document(run_dir)
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


def read_meta_document(run_dir: Path) -> dict[str, Any]:
    """The raw ``pictag.json`` of a run folder (for this package only), its schema checked."""
    meta_path, weights_path = run_dir / META_FILE, run_dir / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a pictag run folder: it needs {META_FILE} and {WEIGHTS_FILE} "
            "(written by `pictag train --out RUN_DIR`)"
        )
    meta = read_json_document(meta_path)
    version = meta.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"{meta_path} has schema_version {version!r}, newer than this pictag "
            f"({__version__}) reads ({SCHEMA_VERSION}); upgrade pictag to use this run"
        )
    _check_weights_match(meta, weights_path)
    return meta


# What to do about a run file that cannot be read.
REREAD_FIX = "copy the run folder again, or retrain the run"


def _check_weights_match(meta: Mapping[str, Any], weights_path: Path) -> None:
    """Refuse weights and metadata of different checkpoints: a kill between the rename of
    ``model.safetensors`` and that of ``pictag.json`` leaves epoch-N weights beside epoch-(N-1)
    metadata, which would evaluate and predict wrongly without a word."""
    written_for = meta.get("weights_id", meta.get("checkpoint_id"))
    if written_for is None:
        return  # a run from before ids were stored
    with (
        readable_safetensors(weights_path, REREAD_FIX),
        safetensors.safe_open(str(weights_path), framework="numpy") as handle,
    ):
        weights_id = (handle.metadata() or {}).get("pictag_id")
    if weights_id != written_for:
        run_dir = weights_path.parent
        raise ValueError(
            f"{weights_path} (checkpoint {weights_id}) and {run_dir / META_FILE} (written for "
            f"checkpoint {written_for}) belong to different checkpoints: training stopped "
            f"between writing the two. Continue it with `pictag train --resume {run_dir}`, or "
            "train again"
        )


def read_json_document(path: Path) -> dict[str, Any]:
    """A JSON object from a run folder's file (for this package only), with a clear error."""
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
