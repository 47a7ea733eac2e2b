"""Which cosine similarity of pretrained backbone features marks the same photo, for the audit:
planted copies (10 % crop, 50 % resize, JPEG 60, mirror) of 300 utkface-5k and 300
miml-scenes photos against the most similar pairs of distinct photos; then, on the whole of
each set, how many pairs the features find at each threshold and how many of those the
perceptual hashes found too (the rest were looked at by eye). Writes
``benchmarks/results/near_duplicates_embeddings.json``.

    .venv/bin/python benchmarks/near_duplicates_embeddings.py
"""

from __future__ import annotations

import io
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader

from bench_utils import LoadMeter, dataset_dir, environment, write_result
from pictag.config import HeadConfig, ModelConfig
from pictag.data.dataset import ImageDataset
from pictag.data.near_duplicates import embedding_pairs, hash_files, near_duplicate_pairs
from pictag.data.schema import Sample, resolve_head
from pictag.data.transforms import eval_transform
from pictag.run import build_model
from pictag.training.probe import extract_features
from pictag.training.runtime import setup_runtime

PER_SET = 300
THRESHOLDS = [0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99]


def _variants(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=60)
    return {
        "crop_10pct": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        "resize_50pct": image.resize((w // 2, h // 2)),
        "jpeg_60": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
        "mirror": ImageOps.mirror(image),
    }


def _features(paths: list[Path]) -> torch.Tensor:
    """Unit-length pretrained Lite0 features of ``paths``."""
    head = resolve_head("x", "multiclass", ["a", "b"])
    model, pre = build_model(ModelConfig(pretrained="offline"), {"x": head}, {"x": HeadConfig()})
    runtime = setup_runtime("cpu", "off", threads=0)
    samples = [Sample(p, {"x": "a"}) for p in paths]
    loader = DataLoader(ImageDataset(samples, {"x": head}, pre, eval_transform(pre)), batch_size=32)
    features, _ = extract_features(model, loader, runtime, True, False)
    return torch.nn.functional.normalize(features.float(), dim=1)


def whole_set(folder: Path) -> dict:
    """Pairs at each threshold over a whole set, and how many the hashes also found."""
    paths = sorted(folder.iterdir())
    vectors = _features(paths)
    kept, hashes = hash_files(paths)
    hashed = {frozenset((p.a, p.b)) for p in near_duplicate_pairs(kept, hashes)}
    counts = {}
    for threshold in THRESHOLDS[2:]:
        pairs = [(pair.a, pair.b) for pair in embedding_pairs(paths, vectors, threshold)]
        also = sum(1 for a, b in pairs if frozenset((a, b)) in hashed)
        counts[f"{threshold:.2f}"] = {"pairs": len(pairs), "also_found_by_hash": also}
    return {"images": len(paths), "hash_pairs": len(hashed), "embedding_pairs": counts}


def main() -> None:
    rng = random.Random(0)
    faces = sorted((dataset_dir("utkface-5k") / "UTKFace").iterdir())
    scenes = sorted((dataset_dir("miml-scenes") / "train").iterdir())
    originals = rng.sample(faces, PER_SET) + rng.sample(scenes, PER_SET)
    work = Path(tempfile.mkdtemp(prefix="pictag-emb-"))
    paths, kinds, source = [], [], []
    for i, path in enumerate(originals):
        image = Image.open(path).convert("RGB")
        paths.append(path)
        kinds.append("original")
        source.append(i)
        for name, variant in _variants(image).items():
            out = work / f"{i}_{name}.png"
            variant.save(out)
            paths.append(out)
            kinds.append(name)
            source.append(i)
    with LoadMeter() as meter:
        vectors = _features(paths).numpy()
    kinds_a, source_a = np.array(kinds), np.array(source)
    base = np.flatnonzero(kinds_a == "original")
    found = {}
    for name in ("crop_10pct", "resize_50pct", "jpeg_60", "mirror"):
        rows = np.flatnonzero(kinds_a == name)
        cosine = (vectors[rows] * vectors[base[source_a[rows]]]).sum(1)
        found[name] = {f"{t:.2f}": round(float((cosine >= t).mean()), 3) for t in THRESHOLDS}
    distinct = vectors[base] @ vectors[base].T
    upper = distinct[np.triu_indices(len(base), k=1)]
    false_pairs = {f"{t:.2f}": int((upper >= t).sum()) for t in THRESHOLDS}
    result = {
        "environment": environment(),
        "backbone": "tf_efficientnet_lite0, offline ImageNet weights, 224 px",
        "originals": len(base),
        "planted_found_share": found,
        "distinct_pairs": len(upper),
        "distinct_pairs_at_or_above": false_pairs,
        "max_distinct_cosine": round(float(upper.max()), 4),
        "features": meter.to_dict(),
    }
    result["whole_sets"] = {
        "utkface-5k": whole_set(dataset_dir("utkface-5k") / "UTKFace"),
        "miml-scenes": whole_set(dataset_dir("miml-scenes") / "train"),
        "looked_at": "utkface-5k, >= 0.95 and not found by hash: 8 pairs, 5 real copies (0.952-"
        "0.984) and 3 different faces (0.950-0.954); >= 0.96: the 3 left are real copies",
    }
    print(result)
    write_result("near_duplicates_embeddings", result)


if __name__ == "__main__":
    main()
