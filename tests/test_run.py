"""The run folder's split and resume accessors (pictag.run)."""

import json
from pathlib import Path

import pytest

from pictag.config import Config, config_to_dict
from pictag.data.schema import Sample
from pictag.data.split_file import SplitError, entry_path, names_from_split_file
from pictag.run import (
    SPLITS_FILE,
    read_resume_config,
    read_splits,
    splits_path,
    write_resume_config,
    write_splits,
)


def test_read_splits_resolves_relative_entries_against_the_run_folder(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()  # entries are compared resolved
    run = tmp_path / "runs" / "one"
    run.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory plays no part in the path rule
    (run / SPLITS_FILE).write_text(
        f"image,split\n../../img/a.jpg,train\n{tmp_path}/abs/b.jpg,val\nc.jpg,test\n"
    )
    assert read_splits(run) == {
        "train": [tmp_path / "img" / "a.jpg"],
        "val": [tmp_path / "abs" / "b.jpg"],
        "test": [run / "c.jpg"],
    }


def test_read_splits_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="splits are unknown") as info:
        read_splits(tmp_path)
    assert str(tmp_path / SPLITS_FILE) in str(info.value)
    assert "pictag train" in str(info.value)


def test_read_splits_names_a_malformed_row(tmp_path):
    (tmp_path / SPLITS_FILE).write_text("image,split\na.jpg,train\nb.jpg,trian\n")
    with pytest.raises(ValueError) as info:
        read_splits(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / SPLITS_FILE}:3: unknown split 'trian'" in message
    assert "fix the rows named, or train again" in message


def test_one_image_listed_twice_with_different_splits_is_refused(tmp_path):
    (tmp_path / SPLITS_FILE).write_text(f"image,split\na.jpg,train\n{tmp_path}/a.jpg,test\n")
    with pytest.raises(SplitError, match="as both train and test"):
        read_splits(tmp_path)


def test_written_splits_read_back_from_another_directory(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()  # entries are compared resolved
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    samples = {"train": [Sample(Path("img/a.jpg"), {})], "val": [Sample(Path("img/b.jpg"), {})]}
    write_splits(tmp_path / "run", samples)
    moved = tmp_path / "archive" / "run"
    moved.parent.mkdir()
    splits_path(tmp_path / "run").parent.rename(moved)
    monkeypatch.chdir(tmp_path / "archive")  # a moved run folder, read from elsewhere
    assert read_splits(moved) == {
        "train": [tmp_path / "img" / "a.jpg"],
        "val": [tmp_path / "img" / "b.jpg"],
        "test": [],
    }


def test_data_split_file_follows_the_same_rule(tmp_path):
    tmp_path = tmp_path.resolve()  # entries are compared resolved
    split_file = tmp_path / "lists" / "split.csv"
    split_file.parent.mkdir()
    split_file.write_text("../img/a.jpg,train\n")
    assert entry_path("../img/a.jpg", split_file) == tmp_path / "img" / "a.jpg"
    assert names_from_split_file([Sample(tmp_path / "img" / "a.jpg", {})], split_file) == ["train"]


def test_resume_config_reads_the_runs_own_split(tmp_path):
    config = Config()
    config.train.epochs = 7
    write_resume_config(tmp_path, config)
    resumed = read_resume_config(tmp_path)
    assert resumed.train.epochs == 7
    assert resumed.data.split_file == str(tmp_path / SPLITS_FILE)


def test_resume_config_names_a_file_without_a_usable_config(tmp_path):
    document = config_to_dict(Config())
    (tmp_path / "config.resolved.json").write_text(json.dumps({"settings": document}))
    with pytest.raises(ValueError, match=r"config\.resolved\.json holds no usable config"):
        read_resume_config(tmp_path)


def test_a_relative_entry_from_an_older_run_is_found_from_the_working_folder(tmp_path, monkeypatch):
    # Before pictag wrote absolute paths, splits.csv held paths as the source gave them:
    # relative to the folder training ran in, not to the run folder.
    image = tmp_path / "data" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"x")
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "splits.csv").write_text("image,split\ndata/a.png,test\n")
    monkeypatch.chdir(tmp_path)
    assert read_splits(run)["test"] == [image.resolve()]
