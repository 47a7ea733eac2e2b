"""The top-level Python API: checked configs that fail fast and name the key, and a
``pictag.train`` that leaves the caller's config as it was."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest

import pictag
from pictag.config import Config, ConfigError, HeadConfig


@pytest.mark.parametrize(
    ("raw", "key", "valid"),
    [
        ({"train": {"monitor": "tags/accuracy"}, "heads": {"tags": "multilabel"}},
         "train.monitor", "tags/mAP"),
        ({"train": {"monitor": "macro_f1"}}, "train.monitor", "score"),
        ({"train": {"lr": -1}}, "train.lr", "> 0"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction", "< 1"),
        ({"heads": {"sex": {"kind": "multiclass", "threshold_target": 0}}},
         "heads.sex.threshold_target", "> 0"),
        ({"heads": {"sex": {"kind": "multiclass", "loss": "asl"}}}, "heads.sex.loss", "focal"),
        ({"heads": {"sex": {"kind": "multiclass", "columns": ["a", "b"]}}},
         "heads.sex.columns", "multilabel"),
        ({"heads": {"tags": {"kind": "multilabel", "bins": [1, 2]}}}, "heads.tags.bins",
         "multiclass"),
        ({"heads": {"x": {"kind": "regression"}}}, "heads.x.kind", "multilabel"),
    ],
)  # fmt: skip
def test_a_config_mistake_fails_in_a_second_naming_the_key(raw, key, valid) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        pictag.load_config(raw)
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert message.startswith(key) and valid in message, message


def test_train_checks_the_config_before_any_work(tmp_path) -> None:
    bad = {"data": {"images": [str(tmp_path / "nowhere")]}, "train": {"monitor": "accuracy"}}
    with pytest.raises(ConfigError, match=r"train\.monitor"):
        pictag.train(bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_monitor_names_a_head_metric_of_the_configured_kind() -> None:
    config = pictag.load_config({"heads": {"sex": "multiclass"}}, ["train.monitor=sex/f1_macro"])
    assert config.train.monitor == "sex/f1_macro"
    # No heads configured (a folder tree names its own): any kind's metric name is accepted.
    assert pictag.load_config(None, ["train.monitor=label/ece"]).train.monitor == "label/ece"


def test_train_does_not_change_the_callers_config(tmp_path) -> None:
    config = Config(heads={"label": HeadConfig()})
    config.data.images = [str(tmp_path / "nowhere")]
    before = copy.deepcopy(config)
    with pytest.raises(Exception):  # noqa: B017 -- no images: whatever fails, fails after copying
        pictag.train(config, tmp_path / "run", progress=False)
    assert config == before


def test_the_api_is_at_the_top() -> None:
    assert {"train", "evaluate", "export", "load_config", "Predictor"} <= set(pictag.__all__)
    assert pictag.Predictor.__name__ == "Predictor"


@pytest.mark.parametrize(
    ("setting", "key"),
    [("train.monitor=label/bogus", "train.monitor"), ("train.lr=-1", "train.lr"),
     ("heads.label.loss=asl", "heads.label.loss")],
)  # fmt: skip
def test_the_cli_refuses_a_bad_config_before_importing_torch(tmp_path, setting, key) -> None:
    # Importing torch alone takes seconds: a config mistake must be reported before it.
    script = (
        "import sys\n"
        "from pictag.cli import main\n"
        f"status = main(['train', '--images', {str(tmp_path)!r}, '--out', "
        f"{str(tmp_path / 'run')!r}, '--head', 'label:multiclass', '--set', {setting!r}])\n"
        "print('torch' in sys.modules, status)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "2"], done.stderr
    assert f"error: {key}" in done.stderr
    assert not (tmp_path / "run").exists()


FAST = [
    "model.backbone=small_cnn",
    "model.image_size=16",
    "train.epochs=2",
    "train.batch_size=8",
    "train.lr=0.01",
    "train.warmup_epochs=0",
    "data.test_fraction=0.25",
]


def test_three_lines_from_a_folder_to_a_trained_evaluated_model(folder_tree, tmp_path) -> None:
    run = tmp_path / "run"
    result = pictag.train(folder_tree, run, overrides=FAST, progress=False)
    report = pictag.evaluate(run, progress=False)
    predictions = pictag.predict(run, sorted((folder_tree / "red").glob("*.png"))[:2])
    assert result.best_epoch in (1, 2) and (run / "model.safetensors").is_file()
    assert report["split"] == "test" and report["heads"]["label"]["n"] == 9
    assert [p.heads["label"].labels[0] in ("red", "green", "blue") for p in predictions] == [
        True, True
    ]  # fmt: skip


def test_a_config_of_the_wrong_type_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(TypeError, match="config must be a YAML path, an image folder, a dict"):
        pictag.train(["data.images=x"], tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def test_lr_find_from_python_and_the_cli(folder_tree, tmp_path, capsys) -> None:
    from pictag.cli import main

    found = pictag.lr_find(folder_tree, tmp_path / "py", overrides=FAST, num_iter=12,
                           progress=False)  # fmt: skip
    assert 1e-7 <= found.suggestion <= 10 and (tmp_path / "py" / "lr_find.png").is_file()
    args = [
        "lr-find",
        "--images",
        str(folder_tree),
        "--out",
        str(tmp_path / "cli"),
        "--steps",
        "12",
    ]
    assert main(args + [x for item in FAST for x in ("--set", item)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("suggested train.lr: ") and "lr_find.png" in printed
    rows = (tmp_path / "cli" / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss,smoothed_loss" and 2 <= len(rows) - 1 <= 12
