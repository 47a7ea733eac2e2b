"""A run folder is never overwritten by accident, never reused stale, and never read when its
weights and metadata belong to different checkpoints."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

import pictag
from pictag.cli import main
from pictag.config import load_config
from pictag.evaluation.predictor import Predictor
from pictag.models.onnx_cache import CACHE_DIR
from pictag.run import (
    RunExistsError,
    claim_run_dir,
    load_run,
    read_run_info,
    read_val_outputs,
    remove_stale_tmp,
    write_params,
)

FAST = [
    "model.backbone=small_cnn",
    "model.pretrained=none",
    "model.image_size=16",
    "train.batch_size=4",
    "train.mode=linear-probe",
    "train.augment=none",
]


@pytest.fixture
def probe_config(folder_tree):
    return load_config(overrides=[f"data.images={folder_tree}", *FAST])


def test_a_second_train_into_a_run_refuses_and_keeps_the_run(probe_config, tmp_path, capsys):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    before = (run / "pictag.json").read_bytes()
    with pytest.raises(RunExistsError, match=r"--overwrite") as refused:
        pictag.train(probe_config, run, progress=False)
    # A probe-only run has no epoch to continue: --resume would only refuse in turn.
    assert "--resume" not in str(refused.value)
    assert (run / "pictag.json").read_bytes() == before
    images = str(probe_config.data.images[0])
    assert main(["train", "--images", images, "--out", str(run), *_sets()]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "pictag.json").read_bytes() == before
    assert main(["train", "--resume", str(run)]) == 2
    assert "its model is the linear probe" in capsys.readouterr().err


def test_overwrite_replaces_the_run_and_its_cached_features(probe_config, tmp_path):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    first = read_run_info(run).checkpoint_id
    assert (run / "features").is_dir()
    (run / "notes.txt").write_text("mine")
    (run / "features" / "train.safetensors").write_bytes(b"stale")  # would crash if reused
    pictag.train(probe_config, run, overwrite=True, progress=False)
    assert read_run_info(run).checkpoint_id != first
    assert (run / "notes.txt").read_text() == "mine"  # only pictag's own files are replaced


def test_weights_of_another_checkpoint_are_refused(probe_config, tmp_path):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    # What a kill between the weights' rename and pictag.json's rename leaves behind.
    state = safetensors.torch.load_file(str(run / "model.safetensors"))
    safetensors.torch.save_file(state, str(run / "model.safetensors"), {"pictag_id": "newer"})
    for read in (read_run_info, load_run, Predictor.from_run):
        with pytest.raises(ValueError, match=r"different checkpoints.*--resume"):
            read(run)


def test_retuning_keeps_the_weights_id_of_an_older_run(probe_config, tmp_path):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    meta = json.loads((run / "pictag.json").read_text())
    meta["checkpoint_id"] = meta.pop("weights_id")  # schema 1 kept one id for both
    (run / "pictag.json").write_text(json.dumps(meta))
    write_params(run, {"label": {}})
    assert load_run(run).checkpoint_id != meta["checkpoint_id"]  # still readable


def test_claim_and_stale_temporary_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    claim_run_dir(run)  # an empty folder is fine
    (run / "last").mkdir()
    with pytest.raises(RunExistsError):
        claim_run_dir(run)  # an interrupted run: --resume
    claim_run_dir(run, clear=False, overwrite=True)
    assert (run / "last").is_dir()  # a torchrun rank that does not write leaves it
    (run / ".pictag.json.x1.tmp").write_text("half")
    (run / "keep.tmp").write_text("a user's file")
    assert [p.name for p in remove_stale_tmp(run)] == [".pictag.json.x1.tmp"]
    assert (run / "keep.tmp").exists()
    (run / CACHE_DIR).mkdir()
    (run / CACHE_DIR / "model-1-2-abc.onnx").write_bytes(b"the old model's optimised copy")
    claim_run_dir(run, overwrite=True)
    assert not (run / "last").exists() and not (run / CACHE_DIR).exists()
    assert (run / "keep.tmp").exists()


def _sets() -> list[str]:
    return [item for setting in FAST for item in ("--set", setting)]


def test_copied_run_folder_still_loads(probe_config, tmp_path):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    shutil.copytree(run, tmp_path / "copy")
    assert read_run_info(tmp_path / "copy").checkpoint_id == read_run_info(run).checkpoint_id


def test_a_run_that_fails_before_any_model_leaves_no_half_written_folder(
    probe_config, tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr("pictag.training.trainer.run_probe", broken)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="out of memory"):
        pictag.train(probe_config, run, progress=False)
    assert not run.exists()  # no splits.csv, no config.resolved.json that looks like a run
    monkeypatch.undo()
    pictag.train(probe_config, run, progress=False)  # no --overwrite needed
    assert read_run_info(run).heads


def test_a_failed_start_keeps_a_users_folder_and_files(probe_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    monkeypatch.setattr("pictag.training.trainer.run_probe", _raise)
    with pytest.raises(RuntimeError):
        pictag.train(probe_config, run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def _raise(*args, **kwargs):
    raise RuntimeError("boom")


def test_a_refused_weights_file_leaves_no_run_folder(folder_tree, tmp_path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"payload": datetime.date(2020, 1, 1)}, evil)  # not a tensor: needs unpickling
    settings = [*FAST, "model.backbone=test_resnet", f"model.pretrained={evil}"]
    config = load_config(overrides=[f"data.images={folder_tree}", *settings])
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load.*safetensors"):
        pictag.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_trained_with_relative_paths_evaluates_from_another_folder(
    folder_tree, tmp_path, monkeypatch
):
    monkeypatch.chdir(folder_tree.parent)
    config = load_config(overrides=[f"data.images={folder_tree.name}", *FAST])
    config.data.val_fraction, config.data.test_fraction = 0.25, 0.25
    pictag.train(config, "run", progress=False)
    assert config.data.images == [folder_tree.name]  # the caller's config is left as it was
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = pictag.evaluate(folder_tree.parent / "run", progress=False)
    assert report["split"] == "test" and report["n_images"] > 0


def test_cut_weights_are_named_with_what_to_do_not_a_traceback(probe_config, tmp_path, capsys):
    run = tmp_path / "run"
    pictag.train(probe_config, run, progress=False)
    outputs = run / "val_outputs.safetensors"
    outputs.write_bytes(outputs.read_bytes()[:100])
    assert read_val_outputs(run) is None  # the model runs over the val images again instead
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a partial copy
    image = next(p for p in sorted(Path(probe_config.data.images[0]).rglob("*")) if p.is_file())
    for command in (["predict", str(run), str(image)], ["evaluate", str(run)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"{weights} cannot be read as safetensors" in err, command
        assert "copy the run folder again, or retrain the run" in err
    with pytest.raises(ValueError, match="cut short"):
        load_run(run)


def test_an_unknown_backbone_is_refused_before_the_data_checks(folder_tree, tmp_path, monkeypatch):
    import pictag.training.trainer as trainer

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(trainer, "prepare_data", no_data)
    config = load_config(
        overrides=[f"data.images={folder_tree}", *FAST, "model.backbone=efficientnet_lite00"]
    )
    with pytest.raises(ValueError, match="did you mean efficientnet_lite0"):
        pictag.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_an_offline_hub_download_is_one_clear_line(folder_tree, tmp_path, monkeypatch, capsys):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We cannot reach huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    sets = [item for s in [*FAST, "model.backbone=resnet18", "model.pretrained=hub"]
            for item in ("--set", s)]  # fmt: skip
    out = str(tmp_path / "run")
    assert main(["train", "--images", str(folder_tree), "--out", out, *sets]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "pictag train: error: Could not download pretrained weights for 'resnet18'" in err
