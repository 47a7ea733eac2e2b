"""What `pictag train` tells the user: the time estimate with a faster choice when it is long,
labelled epoch lines, and which model was kept (a probe is no "epoch 0")."""

from __future__ import annotations

import re
from pathlib import Path

from pictag.config import load_config
from pictag.data.pipeline import PreparedData
from pictag.data.validate import CheckReport
from pictag.training.announce import (
    duration,
    epoch_line,
    estimate_lines,
    plan_lines,
    result_line,
    step_timer,
)


def _data(n_train: int, sizes: list[tuple[int, int]]) -> PreparedData:
    report = CheckReport(source=None, heads={}, problems=[], image_sizes=sizes)  # type: ignore[arg-type]
    splits = {"train": [Path(f"{i}.png") for i in range(n_train)], "val": []}
    return PreparedData({}, splits, report)  # type: ignore[arg-type]


def test_a_long_run_on_small_images_suggests_their_size_and_the_probe() -> None:
    # The MNIST quick start as reported: 60,000 digits of 28 px seen at 224 px, 3 img/s.
    config = load_config(None, ["train.epochs=10"])
    lines = estimate_lines(config, _data(60_000, [(28, 28)] * 5), 224, images_per_s=3.0)
    assert lines[0] == (
        "speed: 3.0 img/s -> about 5 h 33 min per epoch, 55 h 33 min for 10 epochs "
        "(plus validation)"
    )
    hints = "\n".join(lines[1:])
    assert "model.image_size=32" in hints and "small_cnn" in hints
    assert "train.mode=linear-probe" in hints
    assert "train.epochs=3" in hints


def test_a_short_run_gets_the_estimate_and_no_advice() -> None:
    config = load_config(None, ["train.epochs=2"])
    lines = estimate_lines(config, _data(600, [(500, 375)]), 224, images_per_s=100.0)
    assert lines == [
        "speed: 100.0 img/s -> about 6 s per epoch, 12 s for 2 epochs (plus validation)"
    ]


def test_the_estimate_counts_the_images_an_epoch_draws() -> None:
    config = load_config(None, ["train.epochs=2", "train.epoch_images=300"])
    lines = estimate_lines(config, _data(600, [(500, 375)]), 224, images_per_s=100.0)
    assert lines[0].startswith("speed: 100.0 img/s -> about 3 s per epoch, 6 s for 2 epochs")
    plan = plan_lines(config, _data(600, [(500, 375)]), 224, "cpu")
    assert ", 2 epochs of 300 images, batch 32" in plan[0]


def test_the_plan_says_when_there_is_no_test_split() -> None:
    config = load_config(None, [])
    data = _data(600, [(500, 375)])
    assert any("no test split: pictag evaluate will score the validation" in line
               for line in plan_lines(config, data, 224, "cpu"))  # fmt: skip
    data.splits["test"] = [Path("t.png")]
    assert not any("no test split" in line for line in plan_lines(config, data, 224, "cpu"))


def test_photos_at_their_size_get_no_image_size_advice() -> None:
    config = load_config(None, ["train.epochs=10"])
    lines = estimate_lines(config, _data(50_000, [(500, 375)] * 3), 224, images_per_s=20.0)
    assert len(lines) > 1 and not any("image_size" in line for line in lines)


def test_step_timer_estimates_once_from_the_steps_after_the_first() -> None:
    config = load_config(None, ["train.epochs=1"])
    said: list[str] = []
    on_step = step_timer(config, _data(1000, []), 224, said.append)
    on_step(0, 10, 50.0)  # a slow warm-up step is left out of the rate
    on_step(1, 20, 51.0)
    on_step(2, 30, 52.0)
    assert not said
    on_step(3, 40, 53.0)  # 30 images in 3 s
    on_step(4, 50, 54.0)
    assert said == [
        "speed: 10.0 img/s -> about 2 min per epoch, 2 min for 1 epochs (plus validation)"
    ]


def test_epoch_line_labels_train_and_val_loss() -> None:
    fit = {"loss": 0.41234, "images_per_s": 250.4}
    line = epoch_line(3, 10, fit, {"loss": 0.39876, "score": 0.9}, 41.2)
    assert line == "epoch 3/10 (41 s, 250 img/s): train loss 0.4123 | val loss 0.3988"


def test_result_line_names_the_probe_not_epoch_zero() -> None:
    assert result_line(0, 0.91, 0, "runs/x") == "best: the probe, score 0.9100 -> runs/x"
    assert re.match(r"best: the probe \(none of 3 fine-tuning epochs beat it\)",
                    result_line(0, 0.91, 3, "r"))  # fmt: skip
    assert result_line(2, 0.5, 3, "r") == "best: epoch 2 of 3, score 0.5000 -> r"


def test_duration_rounds_like_an_estimate() -> None:
    assert [duration(s) for s in (42, 89.6, 150, 5400, 7260)] == [
        "42 s", "90 s", "2 min", "1 h 30 min", "2 h 1 min",
    ]  # fmt: skip
