"""What an exported model carries so that a consumer needs nothing from pictag.

ONNX ``metadata_props`` hold string pairs. The key ``pictag`` holds one JSON document with all
of it (read it with ``json.loads``)::

    {"format": "pictag-onnx/1", "pictag_version": "0.1.0", "checkpoint_id": "...",
     "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": [-1, 3, H, W]},
     "preprocess": {"input_size": [3, H, W], "mean": [...], "std": [...],
                    "interpolation": "bicubic", "crop_pct": 0.875, "resize_shorter_to": 256},
     "heads": [{"name": "brand", "kind": "multiclass", "output": "brand",
                "activation": "softmax", "decision": "argmax", "labels": [...]},
               {"name": "sick", "kind": "multiclass", "output": "sick",
                "activation": "softmax", "decision": "threshold", "labels": ["no", "yes"],
                "positive": "yes", "positive_index": 1, "threshold": 0.31},
               {"name": "tags", "kind": "multilabel", "output": "tags",
                "activation": "sigmoid", "decision": "threshold", "labels": [...],
                "thresholds": [...]}],
     "thresholds": {"tags": [...]}}

Each head's entry is written by its kind (``export_meta``): the activation that turned logits
into the output's probabilities, and the decision rule with its tuned parameters. A two-class
head with a threshold chooses ``positive`` when its probability is at least ``threshold``.
``thresholds`` repeats the per-label thresholds of tag heads (pictag-onnx/1 consumers read it).

A few flat keys repeat the essentials for tools that show ``metadata_props`` as a table (e.g.
Netron): ``pictag_version``, ``heads``, ``input_size``, ``mean``, ``std``, ``interpolation``,
``crop_pct`` and ``labels.<head>``. The model card (:mod:`pictag.export.model_card`, Markdown)
has its own key, ``pictag.model_card``, rather than a place in the JSON document, which
consumers parse on every load; :func:`read_onnx_metadata` returns it as ``model_card``. The same
document, card included, goes into a TorchScript file as the extra file ``pictag.json``.

Preprocessing, as pictag does it: decode to RGB, resize so the shorter side is
``resize_shorter_to`` (= ``round(max(H, W) / crop_pct)``) with ``interpolation`` (antialiased),
centre-crop ``H x W``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel.
With ``whole: true`` (a model with a detection head) the whole image is resized to ``H x W``
instead (``resize_to``), with no crop: its boxes are fractions of the image's width and height.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import torch

from pictag.data.schema import Head
from pictag.data.transforms import Preprocess
from pictag.heads import Params, get_kind
from pictag.models.onnx_export import OPSET
from pictag.models.onnx_runner import METADATA_FORMAT, METADATA_KEY
from pictag.version import __version__

INPUT_NAME = "images"
MODEL_CARD_KEY = "pictag.model_card"  # metadata_props key of the Markdown model card


def input_name(heads: dict[str, Head]) -> str:
    """``images``, unless a head is called that (outputs are named after heads)."""
    name = INPUT_NAME
    while name in heads:
        name = f"input_{name}"
    return name


def build_metadata(
    heads: dict[str, Head],
    preprocess: Preprocess,
    params: Mapping[str, Params],
    checkpoint_id: str | None,
    model_card: str | None = None,
) -> dict[str, Any]:
    """The ``pictag`` document of an export (see the module notes for its layout).

    Args:
        heads: Head name -> head, in output order.
        preprocess: The run's preprocessing.
        params: Head name -> the run's decision parameters; a head left out gets its kind's
            defaults (argmax, 0.5 thresholds).
        checkpoint_id: The run's checkpoint id, so a stale export can be recognised.
        model_card: The Markdown model card, kept under ``model_card`` (None: no card).
    """
    entries = []
    for name, head in heads.items():
        entry = {"name": name, "kind": head.kind, "output": name}
        entry.update(get_kind(head.kind).export_meta(head, params.get(name, {})))
        entry["labels"] = list(head.labels)
        entries.append(entry)
    # Per-label thresholds of every head that has them, as pictag-onnx/1 consumers read them.
    filled = {e["name"]: e["thresholds"] for e in entries if "thresholds" in e}
    document = {
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
        "preprocess": {**preprocess.to_dict(), **_resize(preprocess)},
        "heads": entries,
        "thresholds": filled,
    }
    if model_card is not None:
        document["model_card"] = model_card
    return document


def metadata_props(metadata: dict[str, Any]) -> dict[str, str]:
    """The string pairs stored in ``metadata_props``: the JSON document plus flat keys (the
    model card under its own key, not in the document)."""
    document = {key: value for key, value in metadata.items() if key != "model_card"}
    pre = metadata["preprocess"]
    props = {
        METADATA_KEY: json.dumps(document, ensure_ascii=False),
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
    if "model_card" in metadata:
        props[MODEL_CARD_KEY] = metadata["model_card"]
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


def _resize(preprocess: Any) -> dict[str, Any]:
    """How a consumer resizes: the whole image to ``H x W``, or the shorter side before the
    centre crop."""
    if preprocess.whole:
        return {"resize_to": list(preprocess.size)}
    return {"resize_shorter_to": preprocess.base_size}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``pictag`` document of an exported ONNX file, with its model card (when it has one)
    under ``model_card``.

    Raises:
        ValueError: The file has no pictag metadata.
    """
    model = onnx.load(str(path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: export it with pictag")
    document = json.loads(props[METADATA_KEY])
    if MODEL_CARD_KEY in props:
        document["model_card"] = props[MODEL_CARD_KEY]
    return document
