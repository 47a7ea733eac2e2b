"""The ``evaluate`` and ``predict`` commands end to end, on a tiny run that ``pictag train``
writes."""

from __future__ import annotations

import csv
import gc
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pictag.cli as cli
from pictag.cli import COMMANDS, build_parser, main

FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=8",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.augment=none",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
]
N_IMAGES = 24


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    rows = ["image,colour,tags"]
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
        pixels[..., i % 3] += 180
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{i:02d}.png")
        rows.append(
            f"images/{i:02d}.png,{('red', 'green', 'blue')[i % 3]},{('a b', 'b', 'c')[i % 3]}"
        )
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["train", "--labels", str(root / "labels.csv"), "--out", str(root / "run")]
    args += ["--head", "colour:multiclass", "--head", "tags:multilabel"]
    assert main(args + [x for item in FAST for x in ("--set", item)]) == 0
    return root / "run"


def _images(run_dir: Path) -> Path:
    return run_dir.parent / "images"


def test_commands_table_lists_evaluate_and_predict():
    assert {"evaluate", "predict"} <= set(COMMANDS)
    assert "evaluate" in build_parser().format_help()


def test_predict_table(run_dir, capsys):
    first, second = sorted(_images(run_dir).glob("*.png"))[:2]
    assert main(["predict", str(run_dir), str(first), str(second)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "colour", "tags"]
    assert len(lines) == 3 and lines[1].startswith(str(first))
    assert any(colour in lines[1] for colour in ("red", "green", "blue"))


def test_predict_json_expands_folders_and_globs(run_dir, capsys):
    images = _images(run_dir)
    assert main(["predict", str(run_dir), str(images), "--format", "json", "--top-k", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["source"] for d in data] == sorted(str(p) for p in images.glob("*.png"))
    assert all(len(d["heads"]["colour"]["scores"]) == 2 for d in data)
    assert all(len(d["heads"]["tags"]["labels"]) == 2 for d in data)
    pattern = str(images / "0*.png")
    assert main(["predict", str(run_dir), pattern, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 10


def test_predict_csv(run_dir, capsys):
    image = sorted(_images(run_dir).glob("*.png"))[0]
    assert main(["predict", str(run_dir), str(image), "--format", "csv", "--at-least-one"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["image"] == str(image) and rows[0]["error"] == ""
    assert rows[0]["colour"] in {"red", "green", "blue"}
    assert rows[0]["tags"]  # at least one tag
    scores = [float(rows[0][f"colour:{c}"]) for c in ("blue", "green", "red")]
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)


def test_predict_unreadable_image_exits_1_and_keeps_going(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("<html>not found</html>")
    good = sorted(_images(run_dir).glob("*.png"))[0]
    args = ["predict", str(run_dir), str(broken), str(good), str(tmp_path / "none" / "*.png")]
    assert main([*args, "--format", "json"]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data[0]["error"] and data[1]["error"] is None and data[1]["heads"]
    assert "broken.jpg" in captured.err and "HTML" in captured.err
    assert "no image file matches" in captured.err


def test_predict_show_writes_pictures(run_dir, tmp_path, capsys):
    images = sorted(_images(run_dir).glob("*.png"))[:3]
    out = tmp_path / "shown"
    assert main(["predict", str(run_dir), *map(str, images), "--show", str(out)]) == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == [p.name for p in images]
    with Image.open(written[0]) as picture:
        assert picture.format == "PNG" and picture.width > picture.height / 2
    assert f"3 pictures with their labels in {out}" in capsys.readouterr().err


def test_evaluate_prints_the_summary_and_writes_reports(run_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test split" in printed
    assert "colour" in printed and "multiclass" in printed and "mAP" in printed
    assert str(out / "report.json") in printed and str(out / "report.html") in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["heads"]) == {"colour", "tags"}


def test_evaluate_a_missing_run_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a pictag run folder" in capsys.readouterr().err


def test_check_data_set_on_a_head_key_keeps_the_patterns_other_heads(tmp_path, capsys):
    # Issue 14, case 2: the age bins change the age head; gender and race stay.
    for i, name in enumerate(("34_1_2_x.png", "8_0_0_x.png", "61_1_3_x.png", "25_0_1_x.png")):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name)
    pattern = r"(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)_"
    args = ["check-data", "--images", str(tmp_path), "--pattern", pattern]
    assert main([*args, "--set", "heads.age.bins=[20]", "--set", "data.min_per_label=1"]) == 0
    out = capsys.readouterr().out
    assert "age: multiclass, 2 labels" in out and ">=20" in out and "<=19" in out
    assert "gender: multiclass, 2 labels" in out
    assert "race: multiclass, 4 labels" in out


def test_help_is_plain_text(capsys):
    # Issue 15, case 10: no reStructuredText markup in `pictag --help`.
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "train, evaluate, export and serve" in out


def test_check_data_skip_writes_skipped_csv_only_where_asked(tmp_path, monkeypatch, capsys):
    # Issue 15, case 10: `check-data --policy skip` wrote skipped.csv into the current folder.
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text(
        "image,colour\n0.png,red\n1.png,blue\n2.png,red\n3.png,blue\nmissing.png,red\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["check-data", "--labels", str(tmp_path / "labels.csv"), "--head", "colour:multiclass"]
    args += ["--policy", "skip", "--set", "data.min_per_label=1"]
    assert main(args) == 0
    assert "4 images kept" in capsys.readouterr().out
    assert list(work.iterdir()) == []
    assert main([*args, "--out", str(tmp_path / "checks")]) == 0
    assert "missing.png" in (tmp_path / "checks" / "skipped.csv").read_text(encoding="utf-8")


def test_train_budget_flag_sets_train_budget_and_a_bad_one_is_refused(tmp_path, capsys):
    from pictag.cli import config_from_args

    args = build_parser().parse_args(["train", "--images", str(tmp_path), "--budget", "7m"])
    assert config_from_args(args).train.budget == "7m"
    command = ["train", "--images", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*command, "--budget", "7 min"]) == 2
    assert "train.budget: '7 min' is not a duration" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_console_main_returns_the_commands_status_and_skips_the_exit_collection(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(sys, "argv", ["pictag", "config", str(tmp_path / "x.yaml")])
    monkeypatch.setattr(cli, "run", lambda args: 3 if args.command == "config" else 0)
    try:
        assert cli.console_main() == 3
        assert gc.get_freeze_count() > 0  # the exit's last collection has nothing left to scan
    finally:
        gc.unfreeze()


def test_torch_is_imported_with_the_collector_off_then_frozen():
    script = (
        "import gc\n"
        "collections = []\n"
        "gc.callbacks.append(lambda phase, info: collections.append(info['generation']))\n"
        "from pictag.cli import import_torch_frozen\n"
        "import_torch_frozen()\n"
        "print(collections.count(2), gc.get_freeze_count() > 300_000, gc.isenabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    # Importing torch with the collector on sets off 5-6 full collections.
    assert done.stdout.split() == ["0", "True", "True"], done.stderr[-2000:]


@pytest.mark.parametrize(
    ("command", "early"), [("predict", True), ("serve", True), ("train", False), ("config", False)]
)
def test_console_main_imports_torch_first_unless_the_command_checks_its_config_first(
    monkeypatch, command, early
):
    calls = [c for c in _console_main_calls(monkeypatch, command) if c != "keep"]
    assert calls == (["import", "run"] if early else ["run"])


def _console_main_calls(monkeypatch, command: str) -> list[str]:
    """What ``console_main`` calls for ``command``, in order: ``keep`` (freed memory kept),
    ``import`` (torch imported frozen), ``run`` (the command)."""
    calls: list[str] = []
    monkeypatch.setattr(sys, "argv", ["pictag", command, *_minimal_args(command)])
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(cli, "import_torch_frozen", lambda: calls.append("import"))
    monkeypatch.setattr(cli, "run", lambda args: calls.append("run") or 0)
    try:
        assert cli.console_main() == 0
    finally:
        gc.unfreeze()
    return calls


def _minimal_args(command: str) -> list[str]:
    return {"predict": ["run", "a.jpg"], "serve": ["run"], "audit": ["run"]}.get(command, [])


def test_config_check_data_a_bad_config_and_help_never_import_torch(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {images: photos}\nheads: {tags: {kind: multilabel}}\n")
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "photos" / label / "a.png")
    script = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('pictag', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    print(done.code, 'torch' in sys.modules)\n"
    )
    folder = ["--images", str(tmp_path / "photos")]
    bad = ["train", *folder, "--out", str(tmp_path / "run"), "--set", "train.lr=-1"]
    cases = [
        (["config", str(config)], "0"),
        (["predict", "--help"], "0"),
        (["check-data", *folder, "--no-decode"], "0"),
        (bad, "2"),  # refused in a fraction of a second, not after importing torch
    ]
    for argv, status in cases:
        command = [sys.executable, "-c", script, *argv]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert done.stdout.split()[-2:] == [status, "False"], (argv, done.stderr[-2000:])
    assert "train.lr" in done.stderr and not (tmp_path / "run").exists()


def test_predict_from_model_onnx_imports_neither_timm_nor_matplotlib(run_dir, tmp_path):
    # Each costs ~0.5-0.8 s of a fresh `pictag predict`; neither is needed to run model.onnx.
    run = shutil.copytree(run_dir, tmp_path / "run")
    assert main(["export", str(run)]) == 0
    script = (
        "import sys; from pictag.cli import main; "
        f"status = main(['predict', {str(run)!r}, {str(_images(run_dir))!r}, '--backend', "
        "'onnxruntime', '--format', 'json']); "
        "print(status, sorted({'timm', 'matplotlib'} & sys.modules.keys()), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]


@pytest.mark.parametrize(
    ("command", "keeps"),
    [("train", True), ("lr-find", True), ("audit", True), ("predict", False), ("config", False)],
)
def test_console_main_keeps_freed_memory_for_the_training_commands_only(
    monkeypatch, command, keeps
):
    calls = [c for c in _console_main_calls(monkeypatch, command) if c != "import"]
    assert calls == (["keep", "run"] if keeps else ["run"])
