"""The quick start in Python: a folder of class sub-folders to a trained, evaluated model.

    .venv/bin/python examples/quickstart.py [RUN_DIR [FOLDER]]

FOLDER defaults to ../shared/data/mnist-png (train/ and test/ folder trees of digits); any
folder tree of class sub-folders works.
"""

import sys
from pathlib import Path

import pictag

mnist = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-png"
run = sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart"
folder = Path(sys.argv[2]) if len(sys.argv) > 2 else mnist
small = ["model.backbone=small_cnn", "model.image_size=28", "train.epochs=3", "train.lr=3e-3"]

pictag.train(folder, run, overrides=small, overwrite=True)
report = pictag.evaluate(run)  # the test split: report.json and report.html in the run
image = next(folder.rglob("*.png"))
print(image.parent.name, "->", pictag.predict(run, image)[0].heads["label"].labels)
print(f"test accuracy {report['heads']['label']['metrics']['accuracy']:.3f}")
