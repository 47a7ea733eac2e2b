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
