"""What an exported model carries so that a consumer needs nothing from pictag.

ONNX ``metadata_props`` hold string pairs. The key ``pictag`` holds one JSON document with all
of it (read it with ``json.loads``)::

    {"format": "pictag-onnx/1", "pictag_version": "0.1.0", "checkpoint_id": "...",
     "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": [-1, 3, H, W]},
     "preprocess": {"input_size": [3, H, W], "mean": [...], "std": [...],
                    "interpolation": "bicubic", "crop_pct": 0.875, "resize_shorter_to": 256},
     "heads": [{"name": "brand", "kind": "multiclass", "output": "brand",
                "activation": "softmax", "decision": "argmax", "labels": [...]},
               {"name": "tags", "kind": "multilabel", "output": "tags",
                "activation": "sigmoid", "decision": "threshold", "labels": [...],
                "thresholds": [...]}],
     "thresholds": {"tags": [...]}}

A few flat keys repeat the essentials for tools that show ``metadata_props`` as a table (e.g.
Netron): ``pictag_version``, ``heads``, ``input_size``, ``mean``, ``std``, ``interpolation``,
``crop_pct`` and ``labels.<head>``. The same document goes into a TorchScript file as the extra
file ``pictag.json``.

Preprocessing, as pictag does it: decode to RGB, resize so the shorter side is
``resize_shorter_to`` (= ``round(max(H, W) / crop_pct)``) with ``interpolation`` (antialiased),
centre-crop ``H x W``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import torch

from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.models.onnx_features import OPSET
from pictag.models.onnx_runner import METADATA_FORMAT, METADATA_KEY
from pictag.version import __version__

DEFAULT_THRESHOLD = 0.5  # a multilabel head without a stored threshold (as Predictor uses)
ACTIVATIONS = {"multiclass": "softmax", "multilabel": "sigmoid"}
DECISIONS = {"multiclass": "argmax", "multilabel": "threshold"}
INPUT_NAME = "images"


def input_name(heads: dict[str, Head]) -> str:
    """``images``, unless a head is called that (outputs are named after heads)."""
    name = INPUT_NAME
    while name in heads:
        name = f"input_{name}"
    return name


def build_metadata(
    heads: dict[str, Head],
    preprocess: Preprocess,
    thresholds: dict[str, list[float]],
    checkpoint_id: str | None,
) -> dict[str, Any]:
    """The ``pictag`` document of an export (see the module notes for its layout).

    Args:
        heads: Head name -> head, in output order.
        preprocess: The run's preprocessing.
        thresholds: Tuned thresholds of multilabel heads; missing ones are filled with 0.5.
        checkpoint_id: The run's checkpoint id, so a stale export can be recognised.
    """
    filled = {
        name: [float(v) for v in thresholds.get(name) or [DEFAULT_THRESHOLD] * head.num_labels]
        for name, head in heads.items()
        if head.kind == "multilabel"
    }
    entries = []
    for name, head in heads.items():
        entry = {
            "name": name,
            "kind": head.kind,
            "output": name,
            "activation": ACTIVATIONS[head.kind],
            "decision": DECISIONS[head.kind],
            "labels": list(head.labels),
        }
        if name in filled:
            entry["thresholds"] = filled[name]
        entries.append(entry)
    return {
        "format": METADATA_FORMAT,
        "pictag_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "checkpoint_id": checkpoint_id,
        "input": {
            "name": input_name(heads),
            "layout": "NCHW",
            "dtype": "float32",
            "shape": [-1, *preprocess.input_size],
        },
        "preprocess": {**preprocess.to_dict(), "resize_shorter_to": preprocess.base_size},
        "heads": entries,
        "thresholds": filled,
    }


def metadata_props(metadata: dict[str, Any]) -> dict[str, str]:
    """The string pairs stored in ``metadata_props``: the JSON document plus flat keys."""
    pre = metadata["preprocess"]
    props = {
        METADATA_KEY: json.dumps(metadata, ensure_ascii=False),
        "pictag_version": metadata["pictag_version"],
        "heads": ",".join(head["name"] for head in metadata["heads"]),
        "input_size": ",".join(str(v) for v in pre["input_size"]),
        "mean": ",".join(str(v) for v in pre["mean"]),
        "std": ",".join(str(v) for v in pre["std"]),
        "interpolation": pre["interpolation"],
        "crop_pct": str(pre["crop_pct"]),
    }
    for head in metadata["heads"]:
        props[f"labels.{head['name']}"] = json.dumps(head["labels"], ensure_ascii=False)
    return props


def write_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store the metadata in the ONNX file at ``path`` (rewritten in place)."""
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata_props(metadata))
    model.producer_name = "pictag"
    model.producer_version = metadata["pictag_version"]
    model.doc_string = "pictag classifier: " + ", ".join(
        f"{head['name']} ({head['kind']}, {len(head['labels'])} labels)"
        for head in metadata["heads"]
    )
    onnx.save(model, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``pictag`` document of an exported ONNX file.

    Raises:
        ValueError: The file has no pictag metadata.
    """
    model = onnx.load(str(path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with pictag")
    return json.loads(props[METADATA_KEY])
