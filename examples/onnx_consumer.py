"""Label images with a pictag ONNX export, without pictag: onnxruntime, numpy and Pillow only.

Everything it needs is in the file's metadata (key ``pictag``, a JSON document): the heads,
their kinds, label names and thresholds, and the preprocessing. It preprocesses as pictag does:
RGB (EXIF rotation applied, transparency over white), shorter side resized to
``round(max(H, W) / crop_pct)`` with the stored interpolation (antialiased; large JPEGs are
first decoded at a reduced size, as pictag does), centre crop ``H x W``, scale to [0, 1],
normalise with the stored mean and std. Pillow's resampling and torchvision's differ by at most
a grey level or two, so the probabilities match pictag's to about 1e-3 and the labels match.

    python examples/onnx_consumer.py runs/cars/model.onnx a.jpg b.jpg [--json]

A ``multiclass`` head shows its most probable class, or, for two classes with a tuned
threshold (``decision: threshold``), the positive class when its probability reaches the
threshold and the other class otherwise; a ``multilabel`` head the labels whose probability
reaches their threshold, most probable first.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
BATCH = 32


def read_metadata(session: onnxruntime.InferenceSession) -> dict:
    """The ``pictag`` JSON document stored in the model's metadata_props."""
    return json.loads(session.get_modelmeta().custom_metadata_map["pictag"])


def load_rgb(path: str, min_size: int) -> Image.Image:
    """Upright 8-bit RGB; a JPEG is decoded at the smallest reduced size still covering
    ``min_size`` on both sides."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")


def preprocess(path: str, pre: dict) -> np.ndarray:
    """One image as a normalised float32 ``[3, H, W]`` array."""
    _, height, width = pre["input_size"]
    base = round(max(height, width) / pre["crop_pct"])
    image = load_rgb(path, base)
    # Shorter side to `base`, the longer one scaled and truncated, as torchvision's Resize does.
    w, h = image.size
    size = (int(base * w / h), base) if h <= w else (base, int(base * h / w))
    image = image.resize(size, FILTERS[pre["interpolation"]])
    top, left = round((size[1] - height) / 2.0), round((size[0] - width) / 2.0)
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return pixels.transpose(2, 0, 1)


def decide(head: dict, probs: np.ndarray) -> list[str]:
    """The labels a head decides on, most probable first."""
    order = np.argsort(-probs, kind="stable")
    if head["kind"] == "multiclass" and head.get("decision") == "threshold":
        # Two classes with a threshold tuned on validation: the positive class when its
        # probability reaches it, else the other class.
        positive = head["positive_index"]
        chosen = positive if probs[positive] >= head["threshold"] else 1 - positive
        return [head["labels"][chosen]]
    if head["kind"] == "multiclass":
        return [head["labels"][order[0]]]
    return [head["labels"][i] for i in order if probs[i] >= head["thresholds"][i]]


def predict(model_path: str, images: list[str]) -> list[dict]:
    """Per image: its path and, per head, the decided labels and every score."""
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    heads = meta["heads"]
    results = []
    for start in range(0, len(images), BATCH):
        paths = images[start : start + BATCH]
        batch = np.stack([preprocess(path, meta["preprocess"]) for path in paths])
        outputs = session.run([h["output"] for h in heads], {meta["input"]["name"]: batch})
        for row, path in enumerate(paths):
            per_head = {}
            for head, probs in zip(heads, outputs, strict=True):
                scores = dict(zip(head["labels"], probs[row].tolist(), strict=True))
                per_head[head["name"]] = {"labels": decide(head, probs[row]), "scores": scores}
            results.append({"source": path, "heads": per_head})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="ONNX file written by `pictag export`")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help="print JSON (labels and scores)")
    args = parser.parse_args()
    results = predict(args.model, args.images)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    for result in results:
        labels = "; ".join(
            f"{name}: {', '.join(head['labels']) or '-'}" for name, head in result["heads"].items()
        )
        print(f"{result['source']}\t{labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
