"""Tiny run folders of every task kind, written without training so the tests stay fast.

A run is a ``small_cnn`` at 16 px whose heads are fitted in closed form (ridge regression on the
pooled features of its own images onto logits of +-8), so its decisions are clear-cut and the
same under pictag's preprocessing and a consumer's (which differ by a grey level or two). The
stored preprocessing is bicubic with ``crop_pct`` 0.875, so resizing and centre cropping are
exercised; images are 20x20 PNGs and 96x64 JPEGs (reduced-size decoding, non-square).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pictag.config import Config, HeadConfig, ModelConfig
from pictag.data.schema import Head
from pictag.data.transforms import decode_image, eval_transform
from pictag.export import ExportResult, export_run
from pictag.run import build_model, run_meta, save_model

COLOURS = ("red", "green", "blue")
TAGS = {0: ("warm",), 1: ("leafy", "natural"), 2: ("cool",)}
HEADS = {
    "colour": Head("colour", "multiclass", COLOURS),
    "tags": Head("tags", "multilabel", ("cool", "leafy", "natural", "warm")),
}
KINDS = {"multiclass": ["colour"], "multilabel": ["tags"], "multioutput": ["colour", "tags"]}
TAG_THRESHOLDS = [0.4, 0.5, 0.6, 0.5]
LOGIT = 8.0  # fitted logit of a true (+) or false (-) label
N_IMAGES = 18


def write_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[Path]:
    """Images whose dominant channel is their class ``i % 3``: PNGs, and every fourth a JPEG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        jpeg = i % 4 == 3  # classes 0, 1, 2, 0, ...
        shape = (64, 96, 3) if jpeg else (20, 20, 3)
        pixels = rng.integers(0, 60, shape, dtype=np.uint8)
        pixels[..., i % 3] += 180
        path = folder / f"{i:03d}.{'jpg' if jpeg else 'png'}"
        Image.fromarray(pixels).save(path, **({"quality": 95} if jpeg else {}))
        paths.append(path)
    return paths


def make_run(root: Path, head_names: list[str], seed: int = 0) -> Path:
    """A run folder ``root/run`` with the named heads, images in ``root/images`` and a
    ``splits.csv`` that lists them (a third each as train, val and test)."""
    heads = {name: HEADS[name] for name in head_names}
    torch.manual_seed(seed)
    model_cfg = ModelConfig(backbone="small_cnn", pretrained="none", image_size=16)
    head_cfgs = {name: HeadConfig(kind=head.kind) for name, head in heads.items()}
    model, pre = build_model(model_cfg, heads, head_cfgs)
    pre = replace(pre, interpolation="bicubic", crop_pct=0.875)
    images = write_images(root / "images", seed=seed)
    _fit_heads(model, heads, pre, images)
    config = Config(heads=head_cfgs, model=model_cfg)
    params = {"tags": {"thresholds": TAG_THRESHOLDS}} if "tags" in heads else {}
    run_dir = root / "run"
    save_model(run_dir, model.state_dict(), run_meta(config, heads, pre, params))
    splits = ["image,split"] + [
        f"{path},{('train', 'val', 'test')[i % 3]}" for i, path in enumerate(images)
    ]
    (run_dir / "splits.csv").write_text("\n".join(splits) + "\n", encoding="utf-8")
    return run_dir


@torch.no_grad()
def _fit_heads(model: torch.nn.Module, heads: dict[str, Head], pre, images: list[Path]) -> None:
    model.eval()
    transform = eval_transform(pre)
    batch = torch.stack([transform(decode_image(path, pre)) for path in images])
    features = model.forward_features(batch).double()
    design = torch.cat([features, torch.ones(len(images), 1, dtype=torch.float64)], dim=1)
    for name, head in heads.items():
        targets = torch.full((len(images), head.num_labels), -LOGIT, dtype=torch.float64)
        for row in range(len(images)):
            on = [COLOURS[row % 3]] if head.kind == "multiclass" else TAGS[row % 3]
            targets[row, [head.labels.index(label) for label in on]] = LOGIT
        ridge = design.T @ design + 1e-3 * torch.eye(design.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(ridge, design.T @ targets)
        linear = model.heads[name][-1]
        linear.weight.copy_(solution[:-1].T.float())
        linear.bias.copy_(solution[-1].float())


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Task kind -> run folder (``multiclass``, ``multilabel``, ``multioutput``). Copy a run
    before changing it."""
    return {kind: make_run(tmp_path_factory.mktemp(kind), heads) for kind, heads in KINDS.items()}


@pytest.fixture(scope="session")
def exported(runs: dict[str, Path]) -> dict[str, ExportResult]:
    """Task kind -> the result of exporting its run to ``RUN_DIR/model.onnx``."""
    return {kind: export_run(run_dir) for kind, run_dir in runs.items()}


@pytest.fixture
def copy_run(tmp_path: Path):
    """``copy_run(run_dir)``: a copy of the run and its images in ``tmp_path`` (modification
    times kept, so an export stays up to date); returns the copied run folder."""
    return lambda run_dir: Path(shutil.copytree(run_dir.parent, tmp_path / "copy")) / "run"
