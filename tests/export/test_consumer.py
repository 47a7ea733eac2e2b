"""``examples/onnx_consumer.py`` -- onnxruntime, numpy and Pillow only -- reads the exported
metadata, preprocesses as pictag does and decides the same labels as ``pictag predict``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pictag.cli import main

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
