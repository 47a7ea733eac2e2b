from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from pictag.data.dataset import ImageDataset
from pictag.data.schema import Head, Sample
from pictag.data.transforms import eval_transform
from pictag.evaluation.evaluate import (
    build_sections,
    evaluate_run,
    json_ready,
    summary_table,
    tune_run_params,
    worst_mistakes,
)
from pictag.evaluation.inference import predict_logits, probabilities
from pictag.heads.thresholds import tune_thresholds
from pictag.run import load_run


def _split_rows(run_dir) -> list[tuple[str, str]]:
    with (run_dir / "splits.csv").open() as handle:
        return [(row["image"], row["split"]) for row in csv.DictReader(handle)]


def _no_nan(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in report.json")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, evaluate_run(tiny_run, out_dir=out, progress=False)


def test_report_json_has_every_head_and_the_documented_keys(tiny_run, report):
    out, result = report
    written = _no_nan((out / "report.json").read_text())
    assert written == result
    n_test = sum(split == "test" for _, split in _split_rows(tiny_run))
    assert n_test > 0
    assert result["run"] == str(tiny_run) and result["split"] == "test"
    assert result["n_images"] == n_test and result["tta"] is False and result["created"]
    assert set(result["heads"]) == {"colour", "tags"}
    colour, tags = result["heads"]["colour"], result["heads"]["tags"]
    assert colour["kind"] == "multiclass" and colour["labels"] == ["blue", "green", "red"]
    assert {"metrics", "per_label", "confusion"} <= set(colour)
    assert {"accuracy", "f1_macro", "ece"} <= set(colour["metrics"])
    # Rows with a missing colour are skipped by the head's metrics, not by the report.
    assert sum(map(sum, colour["confusion"])) == colour["n"] <= n_test
    assert tags["kind"] == "multilabel" and len(tags["per_label"]) == 4
    assert {"thresholds", "metrics", "metrics_at_0.5", "per_label"} <= set(tags)
    assert tags["thresholds"] == load_run(tiny_run).params["tags"]["thresholds"]
    assert 0.0 <= result["all_heads_correct"] <= 1.0


def test_mistakes_are_wrong_images_worst_first(report):
    _, result = report
    mistakes = result["mistakes"]
    assert len(mistakes) <= 24
    losses = [m["loss"] for m in mistakes]
    assert losses == sorted(losses, reverse=True)
    for mistake in mistakes:
        assert set(mistake) == {"image", "where", "loss", "true", "pred", "scores"}
        assert mistake["where"].startswith("labels.csv:")
        wrong_colour = mistake["true"]["colour"] not in (None, mistake["pred"]["colour"])
        wrong_tags = set(mistake["true"]["tags"]) != set(mistake["pred"]["tags"])
        assert wrong_colour or wrong_tags
        assert len(mistake["scores"]["tags"]) == len(mistake["pred"]["tags"])


def test_report_html_is_written(report):
    out, _ = report
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "colour" in html and "tags" in html
    assert "http://" not in html and "https://" not in html  # opens offline


def test_summary_table(report):
    _, result = report
    text = summary_table(result)
    lines = text.splitlines()
    assert "test split" in lines[0]
    assert any(line.startswith("colour") and "accuracy" in line for line in lines)
    assert any(line.startswith("tags") and "mAP" in line for line in lines)
    assert "all heads correct" in lines[-1]


def test_falls_back_to_val_without_test_images(tiny_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    rows = [(image, "train" if split == "test" else split) for image, split in _split_rows(run_dir)]
    with (run_dir / "splits.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "split"), *rows])
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(run_dir, progress=False)
    assert result["split"] == "val"
    assert result["n_images"] == sum(split == "val" for _, split in rows)
    assert "no test images" in caplog.text
    assert (run_dir / "report.json").is_file()  # out_dir defaults to the run folder


def test_a_split_file_chooses_the_images(tiny_run, tmp_path):
    chosen = sorted((tiny_run.parent / "data" / "images").glob("*.png"))[:5]
    split_file = tmp_path / "mine.csv"
    split_file.write_text("image,split\n" + "".join(f"{p},test\n" for p in chosen))
    result = evaluate_run(tiny_run, split_file, out_dir=tmp_path, progress=False, tta=True)
    assert result["n_images"] == 5 and result["tta"] is True
    everything = evaluate_run(tiny_run, split="all", out_dir=tmp_path, progress=False)
    assert everything["n_images"] == len(_split_rows(tiny_run))


def test_a_data_config_skips_broken_images_and_unknown_labels(tiny_run, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(tiny_run.parent / "data", data)
    (data / "images" / "003.png").write_bytes(b"")
    with Image.open(data / "images" / "000.png") as image:  # new bytes: not a duplicate
        image.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(data / "images" / "extra.png")
    with (data / "labels.csv").open("a") as handle:
        handle.write("images/extra.png,purple,warm\n")
    config = tmp_path / "other.yaml"
    config.write_text("data:\n  labels: data/labels.csv\n  policy: skip\n")
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(tiny_run, config, split="all", out_dir=tmp_path, progress=False)
    n_rows = len((data / "labels.csv").read_text().splitlines()) - 1
    assert result["n_images"] == n_rows - 2
    assert "003.png" in caplog.text and "purple" in caplog.text


def test_other_data_is_evaluated_whole_less_the_images_the_run_learnt_from(
    tiny_run, tmp_path, caplog
):
    # Issue 15, case 11: a data set the run never saw is evaluated whole by default, not its
    # 15 % "validation" slice.
    data = tmp_path / "data"
    shutil.copytree(tiny_run.parent / "data", data)
    n_rows = len((data / "labels.csv").read_text().splitlines()) - 1
    config = tmp_path / "other.yaml"
    config.write_text("data:\n  labels: data/labels.csv\n")
    result = evaluate_run(tiny_run, config, out_dir=tmp_path, progress=False)
    assert (result["split"], result["n_images"]) == ("all", n_rows)
    # The run's own data as a config: the images it trained and validated on are left out.
    own = tmp_path / "own.yaml"
    own.write_text(f"data:\n  labels: {tiny_run.parent / 'data' / 'labels.csv'}\n")
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(tiny_run, own, out_dir=tmp_path, progress=False)
    n_test = sum(split == "test" for _, split in _split_rows(tiny_run))
    assert (result["split"], result["n_images"]) == ("all", n_test)
    assert f"{n_rows - n_test} of {n_rows} images" in caplog.text and "--split all" in caplog.text
    # An explicit split is taken as asked.
    everything = evaluate_run(tiny_run, own, split="all", out_dir=tmp_path, progress=False)
    assert everything["n_images"] == n_rows


def test_bad_data_argument(tiny_run, tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="YAML config"):
        evaluate_run(tiny_run, tmp_path / "x.txt", out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_run(tiny_run, split="holdout", out_dir=tmp_path, progress=False)


def test_tune_run_params_rewrites_pictag_json(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    meta_path = run_dir / "pictag.json"
    meta = json.loads(meta_path.read_text())
    meta["decisions"]["tags"] = {"thresholds": [0.123] * 4}
    meta_path.write_text(json.dumps(meta))

    tuned = tune_run_params(run_dir, progress=False)
    assert set(tuned) == {"colour", "tags"} and len(tuned["tags"]["thresholds"]) == 4
    assert tuned["colour"] == {}  # three classes: argmax, nothing to tune
    after = json.loads(meta_path.read_text())
    assert after["decisions"] == tuned
    # A new operating point is a new checkpoint: stale exports are recognised.
    assert after["checkpoint_id"] != meta["checkpoint_id"]
    assert after["weights_id"] == meta["weights_id"]
    changed = {"decisions", "checkpoint_id"}
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in meta.items() if k not in changed
    }
    # The same as tuning by hand on the validation images listed in splits.csv.
    run = load_run(run_dir)
    val = [Sample(p, {}) for p, s in _split_rows(run_dir) if s == "val"]
    assert tuned["tags"]["thresholds"] == pytest.approx(_tune_by_hand(run, tiny_run, val))


def _tune_by_hand(run, tiny_run, val_samples):
    with (tiny_run.parent / "data" / "labels.csv").open() as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    samples = []
    for sample in val_samples:
        row = rows[f"images/{Path(sample.path).name}"]
        samples.append(Sample(Path(sample.path), {"tags": tuple(row["tags"].split())}))
    heads = {"tags": run.heads["tags"]}
    dataset = ImageDataset(samples, heads, run.preprocess, eval_transform(run.preprocess))
    logits, targets = predict_logits(run.model, DataLoader(dataset, batch_size=8))
    probs = probabilities(run.heads, logits)
    return tune_thresholds(probs["tags"], targets["tags"], "f1")


def test_tune_follows_the_head_config(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    meta = json.loads((run_dir / "pictag.json").read_text())
    meta["config"]["heads"]["tags"].update(threshold_by="fixed", threshold_target=0.3)
    (run_dir / "pictag.json").write_text(json.dumps(meta))
    assert tune_run_params(run_dir, progress=False)["tags"] == {"thresholds": [0.3] * 4}
    assert load_run(run_dir).params["tags"] == {"thresholds": [0.3] * 4}


def test_worst_mistakes_ranks_wrong_images_by_loss():
    heads = {
        "c": Head("c", "multiclass", ("a", "b")),
        "t": Head("t", "multilabel", ("x", "y")),
    }
    samples = [Sample(f"{i}.png", {}, where=f"l.csv:{i + 2}") for i in range(4)]
    probs = {
        "c": np.array([[0.9, 0.1], [0.4, 0.6], [0.05, 0.95], [0.5, 0.5]]),
        "t": np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.2], [0.9, 0.9]]),
    }
    targets = {
        "c": np.array([0, 0, 0, -100]),
        "t": np.array([[1, 0], [1, 0], [1, 0], [1, -1]], dtype=np.float32),
    }
    params = {"c": {}, "t": {}}
    mistakes = worst_mistakes(heads, params, samples, probs, targets)
    # Image 0 is right; 2 is more wrong than 1; 3 is right on every known entry.
    assert [m["image"] for m in mistakes] == ["2.png", "1.png"]
    expected_loss = -math.log(0.05) - (math.log(0.9) + math.log(0.8)) / 2
    assert mistakes[0]["loss"] == pytest.approx(expected_loss)
    assert mistakes[0]["true"] == {"c": "a", "t": ["x"]}
    assert mistakes[0]["pred"] == {"c": "b", "t": ["x"]}
    assert mistakes[0]["scores"] == {"c": pytest.approx(0.95), "t": [pytest.approx(0.9)]}
    [worst] = worst_mistakes(heads, params, samples, probs, targets, limit=1)
    assert worst["image"] == "2.png"


def test_json_ready():
    data = {"a": float("nan"), "b": [np.float32(0.5), np.int64(3), np.inf], "c": np.array([1, 2])}
    assert json_ready(data) == {"a": None, "b": [0.5, 3, None], "c": [1, 2]}
    assert json.dumps(json_ready({1: np.bool_(True)})) == '{"1": true}'


def test_summary_table_states_a_binary_heads_operating_point():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    head = Head("sick", "multiclass", ("no", "yes"))
    params = {"sick": {"positive": 1, "threshold": 0.35}}
    samples = [Sample(f"{i}.png", {}) for i in range(4)]
    sections = build_sections(
        {"sick": head}, params, samples, {"sick": probs}, {"sick": np.array([0, 1, 1, 0])}
    )
    report = {"run": "r", "split": "test", "n_images": 4, **sections}
    # P(yes) >= 0.35 on images 1, 2, 3: both positives found (recall 1), one of three wrong.
    assert "sick: positive 'yes' when P >= 0.3500: recall 1.0000, precision 0.6667" in (
        summary_table(json_ready(report))
    )


def test_listed_images_the_data_does_not_give_are_named(tiny_run, tmp_path, caplog):
    chosen = sorted((tiny_run.parent / "data" / "images").glob("*.png"))[:3]
    gone = tmp_path / "gone.png"
    split_file = tmp_path / "mine.csv"
    split_file.write_text("image,split\n" + "".join(f"{p},test\n" for p in [*chosen, gone]))
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(tiny_run, split_file, out_dir=tmp_path, progress=False)
    assert result["n_images"] == 3
    assert "1 of 4 images listed in" in caplog.text and "gone.png (test)" in caplog.text
