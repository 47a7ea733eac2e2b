"""Tests for pictag.run.backend_choice: the auto backend's stored choice per machine."""

from __future__ import annotations

import json

from pictag.models.onnx_runner import file_stamp
from pictag.run import backend_choice
from pictag.run.backend_choice import (
    AUTO_BACKEND_FILE,
    MAX_MACHINES,
    cpu_name,
    machine_key,
    read_auto_choice,
    write_auto_choice,
)


def _key(tmp_path, threads=2):
    model = tmp_path / "model.onnx"
    if not model.exists():
        model.write_bytes(b"onnx")
    return machine_key(file_stamp(model), threads)


def test_a_choice_is_read_back_for_its_key_only(tmp_path):
    key = _key(tmp_path)
    assert read_auto_choice(tmp_path, key) is None
    write_auto_choice(tmp_path, key, "openvino", {"onnxruntime": 9.0, "openvino": 5.0})
    assert read_auto_choice(tmp_path, key) == "openvino"
    assert read_auto_choice(tmp_path, _key(tmp_path, threads=4)) is None
    write_auto_choice(tmp_path, key, "onnxruntime", {})  # measured again: replaces it
    document = json.loads((tmp_path / AUTO_BACKEND_FILE).read_text())
    assert [entry["choice"] for entry in document["choices"]] == ["onnxruntime"]


def test_the_key_changes_with_the_model_file(tmp_path):
    key = _key(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"re-exported, longer")
    assert _key(tmp_path) != key


def test_a_file_keeps_the_latest_machines(tmp_path):
    for threads in range(MAX_MACHINES + 3):
        write_auto_choice(tmp_path, _key(tmp_path, threads), "onnxruntime", {})
    document = json.loads((tmp_path / AUTO_BACKEND_FILE).read_text())
    kept = [entry["key"]["threads"] for entry in document["choices"]]
    assert kept == list(range(3, MAX_MACHINES + 3))


def test_a_broken_or_foreign_file_is_no_choice_and_is_replaced(tmp_path):
    key = _key(tmp_path)
    path = tmp_path / AUTO_BACKEND_FILE
    for text in ("{not json", json.dumps({"format": "other/1", "choices": []}), "[1, 2]"):
        path.write_text(text)
        assert read_auto_choice(tmp_path, key) is None
    write_auto_choice(tmp_path, key, "onnxruntime", {})
    assert read_auto_choice(tmp_path, key) == "onnxruntime"


def test_cpu_name_reads_the_model_name(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n")
    assert cpu_name(str(info)) == "AMD EPYC 7B13"
    monkeypatch.setattr(backend_choice.platform, "processor", lambda: "")
    monkeypatch.setattr(backend_choice.platform, "machine", lambda: "x86_64")
    assert cpu_name(str(tmp_path / "missing")) == "x86_64"
