"""The model card written with every export: beside the file and in its ONNX metadata; test
metrics with bootstrap intervals once the run is evaluated, audit counts once audited, and
"not evaluated" / "not audited" otherwise. Also the bootstrap itself, on synthetic data."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from pictag.config import Config, DataConfig, HeadConfig, ModelConfig
from pictag.data.schema import Head
from pictag.evaluation.evaluate import evaluate_run
from pictag.export import ParityError, export_run, run_export
from pictag.export.bootstrap import metric_interval
from pictag.export.formats import TORCHSCRIPT_EXTRA
from pictag.export.metadata import MODEL_CARD_KEY, read_onnx_metadata
from pictag.heads import get_kind
from pictag.run import build_model, run_meta, save_model

COLOURS = ("red", "green", "blue")
THRESHOLD = 0.3  # the binary head's decision threshold
AUDIT = {
    "created": "2025-01-02T03:04:05+00:00",
    "n_images": 18,
    "label_issues": [
        {"image": "/x/003.png", "head": "colour", "split": "val", "given": "red",
         "suggested": "blue", "score": 0.01, "issue": "given red, looks blue"},
    ],
    "near_duplicates": [
        {"a": "/x/001.png", "b": "/x/007.png", "distance": 2, "splits": ["train", "test"]},
        {"a": "/x/002.png", "b": "/x/005.png", "distance": 3, "splits": ["val", "val"]},
    ],
    "outliers": [{"image": "/x/011.png", "split": "train", "score": 0.2}],
}  # fmt: skip


def make_card_run(root: Path) -> Path:
    """A run over ``root/labels.csv`` (so ``pictag evaluate`` reads its data) with a 3-class head
    ``colour`` and a two-class head ``red`` (positive ``yes``, threshold ``THRESHOLD``); 18
    images, 6 per split, each split holding every class."""
    rows = ["image,colour,red"]
    for i in range(18):
        pixels = np.random.default_rng(i).integers(0, 60, (20, 20, 3), dtype=np.uint8)
        pixels[..., i % 3] += 180
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{COLOURS[i % 3]},{'yes' if i % 3 == 0 else 'no'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    heads = {
        "colour": Head("colour", "multiclass", COLOURS),
        "red": Head("red", "multiclass", ("no", "yes")),
    }
    head_cfgs = {
        "colour": HeadConfig(kind="multiclass"),
        "red": HeadConfig(kind="multiclass", positive="yes"),
    }
    model_cfg = ModelConfig(backbone="small_cnn", pretrained="none", image_size=16)
    data = DataConfig(format="csv", labels=str(root / "labels.csv"), images=[str(root / "images")])
    config = Config(data=data, heads=head_cfgs, model=model_cfg)
    torch.manual_seed(0)
    model, pre = build_model(model_cfg, heads, head_cfgs)
    params = {"red": {"positive": 1, "threshold": THRESHOLD}}
    run_dir = root / "run"
    save_model(run_dir, model.state_dict(), run_meta(config, heads, pre, params))
    splits = ["image,split"] + [
        f"{root / 'images' / f'{i:03d}.png'},{('train', 'val', 'test')[(i // 3) % 3]}"
        for i in range(18)
    ]
    (run_dir / "splits.csv").write_text("\n".join(splits) + "\n", encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """An evaluated and audited run, exported: (run folder, its card, its report)."""
    run_dir = make_card_run(tmp_path_factory.mktemp("card"))
    report = evaluate_run(run_dir, progress=False, device="cpu")
    (run_dir / "audit.json").write_text(json.dumps(AUDIT), encoding="utf-8")
    export_run(run_dir)
    return run_dir, (run_dir / "model.card.md").read_text(encoding="utf-8"), report


def _interval_rows(card: str) -> dict[str, tuple[float, float, float]]:
    """Head -> (value, low, high) of each metrics row with an interval."""
    pattern = r"\| `(\w+)` \| \w+ \| ([\d.]+) \| ([\d.]+) – ([\d.]+) \(([\d,]+) resamples\) \|"
    return {m[0]: (float(m[1]), float(m[2]), float(m[3])) for m in re.findall(pattern, card)}


def test_card_beside_every_export_and_in_its_metadata(runs, exported):
    for kind, run_dir in runs.items():
        card = (run_dir / "model.card.md").read_text(encoding="utf-8")
        assert read_onnx_metadata(run_dir / "model.onnx")["model_card"] == card, kind
        assert card.startswith("# Model card: run")
        assert "Not evaluated: run `pictag evaluate" in card
        assert "Not audited: run `pictag audit" in card
        assert "train 6 · val 6 · test 6" in card and "`small_cnn`" in card
    card = (runs["multioutput"] / "model.card.md").read_text(encoding="utf-8")
    for label in (*COLOURS, "cool", "leafy", "natural", "warm"):
        assert f"| {label} |" in card
    assert "| warm | 0.5000 |" in card  # the tag head's per-label thresholds
    # The JSON document consumers parse stays small: the card has its own key.
    props = {
        p.key: p.value for p in onnx.load(str(runs["multioutput"] / "model.onnx")).metadata_props
    }
    assert "model_card" not in json.loads(props["pictag"]) and MODEL_CARD_KEY in props


def test_a_failed_export_leaves_no_card(runs, exported, copy_run, monkeypatch):
    run_dir = copy_run(runs["multiclass"])
    assert (run_dir / "model.card.md").is_file()  # an earlier export's
    loaded = run_export.onnx_file_runner

    def off(path: Path):
        runner = loaded(path)
        return lambda images: {name: p + 0.1 for name, p in runner(images).items()}

    monkeypatch.setattr(run_export, "onnx_file_runner", off)
    with pytest.raises(ParityError):
        export_run(run_dir)
    assert not (run_dir / "model.onnx").exists() and not (run_dir / "model.card.md").exists()


def test_torchscript_export_gets_a_card_too(runs, copy_run, tmp_path):
    run_dir = copy_run(runs["multilabel"])
    export_run(run_dir, torchscript_path=tmp_path / "tags.pt", onnx=False)
    card = (tmp_path / "tags.card.md").read_text(encoding="utf-8")
    assert "## Head `tags`: multilabel, 4 labels (any number of labels per image)" in card
    extra = {TORCHSCRIPT_EXTRA: ""}
    with pytest.warns(FutureWarning, match="deprecated"):
        torch.jit.load(str(tmp_path / "tags.pt"), _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_EXTRA])["model_card"] == card


def test_evaluated_card_has_intervals_around_the_report_values(evaluated):
    _, card, report = evaluated
    rows = _interval_rows(card)
    assert set(rows) == {"colour", "red"}
    for head, (value, low, high) in rows.items():
        assert low <= value <= high, head
        assert value == pytest.approx(report["heads"][head]["metrics"]["accuracy"], abs=1e-4)
    assert "(1,000 resamples)" in card and "seed 0" in card
    assert "out of date" not in card  # the report agrees with the recomputed metrics
    assert "The test split (6 images)" in card
    assert "Only 6 evaluated images: the intervals are wide" in card


def test_evaluated_card_states_the_binary_decision_and_label_counts(evaluated):
    _, card, report = evaluated
    assert f"`yes` when its probability is at least {THRESHOLD:.4f}, else the other class" in card
    point = report["heads"]["red"]["binary"]["operating_point"]
    assert f"precision {point['precision']:.4f}, recall {point['recall']:.4f}" in card
    assert "Tuned on the validation split (6 images) for f1" in card
    # 18 images, 6 per split, classes cycling: two of each colour in each split.
    assert "| label | train images | val images | test images |" in card
    assert "| red | 2 | 2 | 2 |" in card and "| yes | 2 | 2 | 2 |" in card
    assert "| no | 4 | 4 | 4 |" in card


def test_evaluated_card_lists_the_audit(evaluated):
    run_dir, card, _ = evaluated
    assert "found 1 label issues, 2 near-duplicate pairs (1 across splits) and 1 outliers" in card
    assert "`003.png` (val): `colour` given red, suggested blue" in card
    assert "`001.png` and `007.png` (train / test)" in card
    assert "1 near-duplicate pairs span splits" in card
    assert read_onnx_metadata(run_dir / "model.onnx")["model_card"] == card


def test_card_keeps_report_values_when_the_data_is_gone(tmp_path):
    run_dir = make_card_run(tmp_path)
    report = evaluate_run(run_dir, progress=False, device="cpu")
    shutil.rmtree(tmp_path / "images")  # the run folder copied without its data, in effect
    export_run(run_dir)
    card = (run_dir / "model.card.md").read_text(encoding="utf-8")
    assert "No intervals: " in card and "can be read here" in card
    value = report["heads"]["red"]["metrics"]["accuracy"]
    assert f"| `red` | accuracy | {value:.4f} |  |" in card


def test_a_report_that_disagrees_is_flagged(tmp_path):
    run_dir = make_card_run(tmp_path)
    report = evaluate_run(run_dir, progress=False, device="cpu")
    report["heads"]["red"]["metrics"]["accuracy"] = 0.123  # e.g. made before a re-tuning
    (run_dir / "report.json").write_text(json.dumps(report), encoding="utf-8")
    export_run(run_dir)
    card = (run_dir / "model.card.md").read_text(encoding="utf-8")
    assert "gives `red` accuracy 0.1230, not " in card and "out of date" in card
    assert "gives `colour`" not in card


def test_unreadable_report_stops_the_export_before_writing(tmp_path):
    run_dir = make_card_run(tmp_path)
    (run_dir / "report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"report.json cannot be read .*pictag evaluate"):
        export_run(run_dir)
    assert not (run_dir / "model.onnx").exists() and not (run_dir / "model.card.md").exists()


def _accuracy_80(n: int = 1000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets of a 3-class head that is right on exactly 80 % of ``n``."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    chosen = targets.copy()
    wrong = rng.permutation(n)[: n // 5]
    chosen[wrong] = (targets[wrong] + 1) % 3
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), chosen] = 0.8
    return probs, targets


def test_bootstrap_interval_of_accuracy_is_the_binomial_width_and_seeded():
    probs, targets = _accuracy_80()
    kind = get_kind("multiclass")
    interval = metric_interval(kind, probs, targets, {})
    assert interval.metric == "accuracy" and interval.value == pytest.approx(0.8)
    # sqrt(0.8 * 0.2 / 1000) = 0.0126: a 95 % interval of about +-0.025
    assert interval.low == pytest.approx(0.775, abs=0.006)
    assert interval.high == pytest.approx(0.825, abs=0.006)
    assert interval.resamples == 1000 and interval.seed == 0
    assert metric_interval(kind, probs, targets, {}) == interval
    assert metric_interval(kind, probs, targets, {}, seed=1) != interval


def test_fast_and_metric_by_metric_bootstraps_agree():
    """The vectorised judged share gives exactly what the kind's metrics give on each of the
    same seeded resamples."""
    probs, targets = _accuracy_80(200)
    kind = get_kind("multiclass")
    rows = np.random.default_rng(0).integers(0, 200, size=(50, 200))
    values = [kind.metrics(probs[r], targets[r], {})["accuracy"] for r in rows]
    interval = metric_interval(kind, probs, targets, {}, resamples=50)
    assert (interval.low, interval.high) == tuple(np.percentile(values, [2.5, 97.5]))


def test_map_is_bootstrapped_through_the_kinds_metrics():
    rng = np.random.default_rng(0)
    probs = rng.random((120, 4))
    targets = (rng.random((120, 4)) < probs).astype(np.float64)
    kind = get_kind("multilabel")
    interval = metric_interval(kind, probs, targets, {}, resamples=30)
    rows = np.random.default_rng(0).integers(0, 120, size=(30, 120))
    values = [kind.metrics(probs[r], targets[r], {})["mAP"] for r in rows]
    assert interval.metric == "mAP" and interval.resamples == 30
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    assert interval.low <= interval.value <= interval.high


def test_bootstrap_of_5000_images_takes_under_two_seconds():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), 5000)
    targets = rng.integers(0, 10, 5000)
    kind = get_kind("multiclass")
    metric_interval(kind, probs[:50], targets[:50], {}, resamples=10)  # imports scikit-learn
    start = time.perf_counter()
    interval = metric_interval(kind, probs, targets, {})
    assert time.perf_counter() - start < 2.0
    assert interval.resamples == 1000


def test_no_interval_without_known_targets():
    probs = np.full((4, 3), 1 / 3)
    assert metric_interval(get_kind("multiclass"), probs, np.full(4, -100), {}) is None
