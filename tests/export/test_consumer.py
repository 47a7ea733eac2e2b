"""``examples/onnx_consumer.py`` -- onnxruntime, numpy and Pillow only -- reads the exported
metadata, preprocesses as pictag does and decides the same labels as ``pictag predict``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pictag.cli import main
from pictag.config import Config, HeadConfig, ModelConfig
from pictag.data.schema import Head
from pictag.data.transforms import decode_image, eval_transform
from pictag.export import export_run
from pictag.run import build_model, run_meta, save_model

from .conftest import write_images

CONSUMER = Path(__file__).resolve().parents[2] / "examples" / "onnx_consumer.py"
ALLOWED = {"argparse", "json", "sys", "__future__", "numpy", "onnxruntime", "PIL"}
# Runs the consumer with pictag, torch and torchvision made unimportable.
BLOCKED_RUN = (
    "import runpy, sys\n"
    "for name in ('pictag', 'torch', 'torchvision', 'onnx'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def test_consumer_imports_only_onnxruntime_numpy_pil_and_stdlib():
    tree = ast.parse(CONSUMER.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED, imported - ALLOWED
    assert {"onnxruntime", "numpy", "PIL"} <= imported


@pytest.mark.parametrize("kind", ["multiclass", "multioutput"])
def test_consumer_labels_equal_pictag_predict(runs, exported, kind, capsys):
    run_dir = runs[kind]
    images = [str(p) for p in sorted((run_dir.parent / "images").iterdir())]
    assert any(i.endswith(".jpg") for i in images)  # reduced-size JPEG decoding, non-square

    assert main(["predict", str(run_dir), *images, "--format", "json", "--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)

    command = [sys.executable, "-c", BLOCKED_RUN, str(CONSUMER), str(exported[kind].onnx.path)]
    done = subprocess.run(
        [*command, *images, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)

    assert [g["source"] for g in got] == [e["source"] for e in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert list(mine["heads"]) == list(theirs["heads"])
        for name, head in mine["heads"].items():
            assert head["labels"] == theirs["heads"][name]["labels"], (mine["source"], name)
            # Pillow's and torchvision's resampling differ by a grey level or two at most.
            assert head["scores"] == pytest.approx(theirs["heads"][name]["scores"], abs=5e-3)


def test_consumer_plain_output_names_each_head(exported, runs):
    image = sorted((runs["multioutput"].parent / "images").iterdir())[1]
    done = subprocess.run(
        [sys.executable, str(CONSUMER), str(exported["multioutput"].onnx.path), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == f"{image}\tcolour: green; tags: leafy, natural"


# Logit of "yes" (against 0 for "no") fitted to the images of each colour class (i % 3); the
# fit on a random small_cnn's features gets about half of it: P(yes) ~0.14, ~0.38, ~0.86.
YES_LOGITS = (-4.0, -1.0, 4.0)
THRESHOLD = 0.25  # tuned below 0.5: the class-1 images are "yes" by it, "no" by argmax


@torch.no_grad()
def _binary_run(root: Path) -> Path:
    """A run whose two-class head is fitted to ``YES_LOGITS``, with the threshold
    ``THRESHOLD`` on its positive class ``yes``."""
    head = Head("pair", "multiclass", ("no", "yes"))
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone="small_cnn", pretrained="none", image_size=16)
    head_cfgs = {"pair": HeadConfig(kind="multiclass")}
    model, pre = build_model(model_cfg, {"pair": head}, head_cfgs)
    pre = replace(pre, interpolation="bicubic", crop_pct=0.875)
    images = write_images(root / "images")
    model.eval()
    transform = eval_transform(pre)
    features = model.forward_features(
        torch.stack([transform(decode_image(path, pre)) for path in images])
    ).double()
    design = torch.cat([features, torch.ones(len(images), 1, dtype=torch.float64)], dim=1)
    yes = torch.tensor([YES_LOGITS[i % 3] for i in range(len(images))])
    targets = torch.stack([torch.zeros_like(yes), yes], dim=1).double()
    ridge = design.T @ design + 1e-3 * torch.eye(design.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(ridge, design.T @ targets)
    linear = model.heads["pair"][-1]
    linear.weight.copy_(solution[:-1].T.float())
    linear.bias.copy_(solution[-1].float())
    params = {"pair": {"positive": 1, "threshold": THRESHOLD}}
    config = Config(heads=head_cfgs, model=model_cfg)
    run_dir = root / "run"
    save_model(run_dir, model.state_dict(), run_meta(config, {"pair": head}, pre, params))
    return run_dir


def test_consumer_decides_a_two_class_head_by_its_tuned_threshold(tmp_path, capsys):
    run_dir = _binary_run(tmp_path)
    onnx_path = export_run(run_dir).onnx.path
    images = [str(p) for p in sorted((tmp_path / "images").iterdir())]
    assert main(["predict", str(run_dir), *images, "--format", "json", "--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)
    command = [sys.executable, "-c", BLOCKED_RUN, str(CONSUMER), str(onnx_path), *images]
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    got = [result["heads"]["pair"] for result in json.loads(done.stdout)]
    wanted = [result["heads"]["pair"]["labels"] for result in expected]
    assert [head["labels"] for head in got] == wanted
    # The threshold decided: images whose argmax is "no" are "yes" (the class-1 images).
    flipped = [h for h in got if h["labels"] == ["yes"] and h["scores"]["yes"] < 0.5]
    assert len(flipped) == len(images) // 3
    assert sum(h["labels"] == ["no"] for h in got) == len(images) // 3  # class 0, below it
