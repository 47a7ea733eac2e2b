import os
import stat

import pytest
import safetensors.torch
import torch

from pictag.fileio import atomic_write, umask, write_json


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert path.read_text() == '{\n  "a": 2\n}\n'
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~umask()
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_writer_that_makes_its_file_anew_still_gets_normal_permissions(tmp_path):
    # safetensors' save_file removes the temporary file and creates its own, 0600.
    path = tmp_path / "model.safetensors"
    atomic_write(path, lambda tmp: safetensors.torch.save_file({"w": torch.ones(2)}, str(tmp)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask()


def test_umask_reads_the_mask_without_setting_it(monkeypatch):
    before = os.umask(0o027)
    try:
        if os.path.exists("/proc/self/status"):  # Linux: read, never set (threads would see it)
            monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("umask was set"))
        assert umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(before)


def test_umask_reads_the_mask_and_leaves_it_as_it_was():
    before = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert umask() == 0o027
    finally:
        os.umask(before)
