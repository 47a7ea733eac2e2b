"""``pictag export RUN_DIR``: default and explicit paths, the parity summary, and exit status 1
with no file left when parity fails."""

from __future__ import annotations

import json

import onnx

from pictag.cli import main
from pictag.export import run_export


def test_export_command_writes_both_formats(runs, copy_run, tmp_path, capsys):
    run_dir = copy_run(runs["multioutput"])
    (run_dir / "model.onnx").unlink(missing_ok=True)
    onnx_path, script_path = tmp_path / "out" / "cars.onnx", tmp_path / "out" / "cars.pt"
    code = main(
        ["export", str(run_dir), "--onnx", str(onnx_path), "--torchscript", str(script_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert onnx_path.is_file() and script_path.is_file()
    assert not (run_dir / "model.onnx").exists()  # --onnx replaces the default path
    assert f"onnx {onnx_path} via torchscript: parity ok (tolerance 0.0001)" in out
    assert f"torchscript {script_path} via torch.jit.trace: parity ok" in out
    assert "real (12 images): max |diff| colour" in out and "tags" in out
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert [h["name"] for h in json.loads(props["pictag"])["heads"]] == ["colour", "tags"]


def test_export_command_fails_above_the_tolerance(runs, exported, copy_run, monkeypatch, capsys):
    run_dir = copy_run(runs["multilabel"])
    assert (run_dir / "model.onnx").is_file()  # an earlier export, which must go too
    load = run_export.onnx_file_runner

    def corrupted(path):
        run = load(path)
        return lambda images: {k: 1 - v for k, v in run(images).items()}

    monkeypatch.setattr(run_export, "onnx_file_runner", corrupted)
    code = main(["export", str(run_dir), "--tolerance", "0.001"])
    err = capsys.readouterr().err
    assert code == 1
    assert "parity check failed, file not kept" in err and "parity FAILED" in err
    assert "tags" in err
    assert not (run_dir / "model.onnx").exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_export_command_needs_a_run_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "not a pictag run folder" in capsys.readouterr().err


def test_predict_backend_flag(runs, exported, copy_run, capsys):
    run_dir = copy_run(runs["multiclass"])
    image = str(sorted((run_dir.parent / "images").iterdir())[0])
    for backend in ("onnxruntime", "torch"):
        argv = ["predict", str(run_dir), image, "--format", "json", "--backend", backend]
        assert main([*argv, "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["heads"]["colour"]["labels"] == ["red"]
    (run_dir / "model.onnx").unlink()
    argv = ["predict", str(run_dir), image, "--backend", "onnxruntime", "--device", "cpu"]
    assert main(argv) == 2
    assert "pictag export" in capsys.readouterr().err  # says how to get the file
