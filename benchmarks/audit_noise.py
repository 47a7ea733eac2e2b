"""How well ``pictag audit`` finds labels flipped on purpose, beside ranking by training loss.

For each set a noisy copy of the labels is made: 5 % of the training images get a wrong label
(utkface-5k, head ``race``: another race; miml-scenes, head ``tags``: one tag toggled), a linear
probe is trained on the noisy copy (the official or seeded split; test images keep their
labels), and then:

- the audit's ranking (``label_issues``, cleanlab on out-of-fold probabilities);
- the "top losses" ranking peer tools show: the trained run's loss on each image's given label.

Reported per set: N flipped, the share of flipped images among each ranking's top N and top 2N,
and the wall times. Writes ``benchmarks/results/audit_noise.json``.

    .venv/bin/python benchmarks/audit_noise.py [--only utkface miml] [--out /tmp/pictag-audit]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

import pictag
from bench_utils import (
    MIML_TAGS,
    LoadMeter,
    dataset_dir,
    environment,
    miml_rows,
    write_result,
)

NOISE = 0.05
SEED = 0
RACES = ["White", "Black", "Asian", "Indian", "Other"]
PROBE = ["train.mode=linear-probe"]


def utkface_noisy(out: Path) -> tuple[dict, set[str]]:
    """A CSV of ``image,race`` from utkface-5k's file names, 5 % of rows relabelled."""
    root = dataset_dir("utkface-5k") / "UTKFace"
    rows = []
    for path in sorted(root.iterdir()):
        match = re.match(r"\d+_\d_(\d)_", path.name)
        if match:
            rows.append([path.name, RACES[int(match.group(1))]])
    rng = random.Random(SEED)
    flipped = set()
    for row in rng.sample(rows, round(NOISE * len(rows))):
        row[1] = rng.choice([race for race in RACES if race != row[1]])
        flipped.add(_stem(row[0]))
    labels = out / "utkface-noisy.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["image", "race"], *rows])
    config = {
        "data": {"images": [str(root)], "labels": str(labels), "policy": "skip",
                 "test_fraction": 0.15},
        "heads": {"race": "multiclass"},
    }  # fmt: skip
    return config, flipped


def miml_noisy(out: Path) -> tuple[dict, set[str]]:
    """miml-scenes' CSV with one tag toggled on 5 % of the rows whose image is in train/."""
    root = dataset_dir("miml-scenes")
    header, rows = miml_rows(root)
    in_train = {p.stem for p in (root / "train").iterdir()}
    eligible = [r for r in rows if r and r[0] in in_train]
    rng = random.Random(SEED)
    flipped = set()
    for row in rng.sample(eligible, round(NOISE * len(eligible))):
        tag = 1 + rng.randrange(len(MIML_TAGS))
        row[tag] = "0" if row[tag] == "1" else "1"
        flipped.add(_stem(row[0]))
    labels = out / "miml-noisy.csv"
    with labels.open("w", encoding="utf-8", newline="") as handle:
        handle.write(header + "\n")
        csv.writer(handle, lineterminator="\n").writerows(rows)
    config = {
        "data": {"images": [str(root / "train"), str(root / "test")], "labels": str(labels),
                 "policy": "skip"},
        "heads": {"tags": {"kind": "multilabel", "columns": MIML_TAGS}},
    }  # fmt: skip
    return config, flipped


SETS = {"utkface": utkface_noisy, "miml": miml_noisy}


def _stem(path: str | Path) -> str:
    """A file's name up to its first dot: miml ids and utkface names alike."""
    return Path(path).name.split(".")[0]


def loss_ranking(run: Path, head: str, train: list[Path]) -> list[str]:
    """The training images, highest loss of the run on their given label first."""
    from pictag.data.sources import read_samples

    meta = json.loads((run / "pictag.json").read_text())
    labels = next(h["labels"] for h in meta["heads"] if h["name"] == head)
    config = pictag.load_config(meta["config"])
    given = {s.path: s.labels.get(head) for s in read_samples(config.data, config.heads).samples}
    paths = [path for path in train if path in given]
    predictions = pictag.Predictor.from_run(run).predict(paths, batch_size=64)
    losses = []
    for path, prediction in zip(paths, predictions, strict=True):
        scores = prediction.heads[head].scores
        probs = np.array([scores[label] for label in labels]).clip(1e-7, 1 - 1e-7)
        label = given[path]
        if isinstance(label, (tuple, list)):  # tags: binary cross-entropy over every tag
            target = np.array([name in label for name in labels], dtype=float)
            loss = -(target * np.log(probs) + (1 - target) * np.log(1 - probs)).sum()
        else:  # one class: cross-entropy of the given class
            loss = -np.log(probs[labels.index(label)])
        losses.append((float(loss), _stem(path)))
    return [name for _, name in sorted(losses, reverse=True)]


def shares(ranking: list[str], flipped: set[str]) -> dict[str, Any]:
    n = len(flipped)
    return {
        "top_n": round(len(set(ranking[:n]) & flipped) / n, 3),
        "top_2n": round(len(set(ranking[: 2 * n]) & flipped) / n, 3),
        "ranked": len(ranking),
    }


def run_set(name: str, out: Path) -> dict[str, Any]:
    """Train a probe on the noisy copy, audit it, and score both rankings on the training
    images (the only ones a training loss ranks)."""
    from pictag.run import read_splits

    out.mkdir(parents=True, exist_ok=True)
    config, flipped = SETS[name](out)
    run = out / f"{name}-run"
    with LoadMeter() as training:
        pictag.train(config, run, overrides=PROBE, overwrite=True)
    with LoadMeter() as auditing:
        audit = pictag.audit(run)
    train = read_splits(run)["train"]
    train_names = {_stem(path) for path in train}
    target = flipped & train_names
    audit_ranking = [_stem(i["image"]) for i in audit["label_issues"] if i["split"] == "train"]
    head = next(iter(config["heads"]))
    pairs = audit["near_duplicates"]
    return {
        "flipped": len(flipped),
        "flipped_in_train": len(target),
        "train_images": len(train),
        "audit": shares(audit_ranking, target),
        "training_loss": shares(loss_ranking(run, head, train), target),
        "train_time": training.to_dict(),
        "audit_time": auditing.to_dict(),
        "audited_images": audit["n_images"],
        "near_duplicates": len(pairs),
        "near_duplicates_across_splits": sum(1 for p in pairs if len(set(p["splits"])) > 1),
        "outliers_top5": [item["image"] for item in audit["outliers"][:5]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(SETS))
    parser.add_argument("--out", default="/tmp/pictag-audit")
    args = parser.parse_args()
    results = {}
    for name in args.only or SETS:
        results[name] = run_set(name, Path(args.out))
        print(json.dumps({name: results[name]}, indent=1), flush=True)
        write_result("audit_noise", {"environment": environment(), "noise": NOISE,
                                     "seed": SEED, "sets": results})  # fmt: skip


if __name__ == "__main__":
    main()
