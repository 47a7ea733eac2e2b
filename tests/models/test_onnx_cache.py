"""ONNX Runtime's optimised copy of a model, kept per machine next to it: made on first open,
opened (with the same outputs) after, made anew for another file or machine (never opened for
another file with the same size and time), and never in the way when its folder cannot be
written, it cannot be saved or the copy is damaged."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from pictag.models import onnx_cache, onnx_session
from pictag.models.onnx_cache import CACHE_DIR, optimized_copy
from pictag.models.onnx_session import create_session

IMAGES = np.random.default_rng(0).standard_normal((2, 3, 16, 16), dtype=np.float32)


def _write_model(path: Path, seed: int = 0) -> Path:
    """Two convolutions (which ONNX Runtime's full optimisation turns into its blocked CPU
    layout) and a global pool, with seeded weights."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3), dtype=np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3), dtype=np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["b", 3, 16, 16])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["b", 8, 1, 1])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(session) -> np.ndarray:
    return session.run(None, {"images": IMAGES})[0]


def _open(path: Path, cache: bool = True):
    return create_session(onnxruntime, path, 1, cache=cache)


def test_the_first_open_keeps_a_copy_and_the_next_opens_it(tmp_path):
    model = _write_model(tmp_path / "model.onnx")
    plain = _open(model, cache=False)
    assert not (tmp_path / CACHE_DIR).exists()  # only when asked for
    first = _open(model)
    copy = optimized_copy(model, onnxruntime.__version__)
    assert copy is not None and copy.is_file() and copy.parent == tmp_path / CACHE_DIR
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no temporary file left
    assert first._model_path == str(model)
    second = _open(model)
    assert second._model_path == str(copy)  # optimised already: opened with optimisation off
    if platform.machine() in ("x86_64", "AMD64"):  # the blocked layout of x86's kernels
        optimised = onnx.load(str(copy))
        assert any(node.domain == "com.microsoft.nchwc" for node in optimised.graph.node)
    np.testing.assert_array_equal(_run(second), _run(first))
    np.testing.assert_array_equal(_run(second), _run(plain))


def test_a_copy_per_machine_made_anew_for_another_file(tmp_path, monkeypatch):
    model = _write_model(tmp_path / "model.onnx")
    _open(model)
    first = optimized_copy(model, onnxruntime.__version__)
    monkeypatch.setattr(onnx_cache, "cpu_signature", lambda: "another CPU|avx512f")
    _open(model)
    other = optimized_copy(model, onnxruntime.__version__)
    assert other != first and other.is_file() and first.is_file()  # a copy for each machine
    monkeypatch.undo()
    old = _run(_open(model))  # this machine's copy again
    # Another model with the same size and modification time (as `cp -p` or a rewrite that
    # restores the time would leave it) must not open the first one's graph.
    before = model.stat()
    _write_model(model, seed=1)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    reference = _run(_open(model, cache=False))
    assert not np.array_equal(reference, old)
    np.testing.assert_array_equal(_run(_open(model)), reference)
    np.testing.assert_array_equal(_run(_open(model)), reference)  # from its own copy
    # The first file's copies (both machines') went with it.
    assert [p.name for p in (tmp_path / CACHE_DIR).iterdir()] == [
        optimized_copy(model, onnxruntime.__version__).name
    ]


def test_a_copy_left_half_saved_by_a_dead_process_is_removed(tmp_path):
    model = _write_model(tmp_path / "model.onnx")
    folder = tmp_path / CACHE_DIR
    folder.mkdir()
    dead = folder / "model-1.2.3.4-abc.99.1.tmp"
    dead.write_bytes(b"half")
    live = folder / "model-1.2.3.4-abc.98.1.tmp"  # another process saving right now
    live.write_bytes(b"half")
    old = dead.stat().st_mtime - onnx_cache.STALE_TEMP_S - 1
    os.utime(dead, (old, old))
    # Another machine's copy of this very file, made long ago, is no temporary copy.
    mine = optimized_copy(model, onnxruntime.__version__)
    theirs = mine.with_name(f"{mine.stem.rsplit('-', 1)[0]}-0123456789ab.onnx")
    theirs.write_bytes(b"their optimised graph")
    os.utime(theirs, (old, old))
    _open(model)
    assert not dead.exists() and live.exists() and theirs.exists() and mine.is_file()


def test_no_copy_where_the_cpu_flags_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_cache, "cpu_signature", lambda: "")
    model = _write_model(tmp_path / "model.onnx")
    assert optimized_copy(model, onnxruntime.__version__) is None
    np.testing.assert_array_equal(_run(_open(model)), _run(_open(model, cache=False)))
    assert not (tmp_path / CACHE_DIR).exists()


def test_a_copy_that_cannot_be_saved_only_costs_the_optimisation(tmp_path, monkeypatch, caplog):
    model = _write_model(tmp_path / "model.onnx")
    # Fault injection: ONNX Runtime is asked to save where it cannot (a missing folder).
    monkeypatch.setattr(
        onnx_session, "writable_temp", lambda copy: tmp_path / "missing" / "copy.tmp"
    )
    with caplog.at_level(logging.INFO, logger=onnx_session.__name__):
        session = _open(model)
    assert "cannot save an optimised copy" in caplog.text
    assert session._model_path == str(model)
    np.testing.assert_array_equal(_run(session), _run(_open(model, cache=False)))


def test_a_folder_that_cannot_hold_the_copy_only_costs_the_optimisation(tmp_path):
    model = _write_model(tmp_path / "model.onnx")
    (tmp_path / CACHE_DIR).write_text("a file where the folder would go")
    session = _open(model)
    assert session._model_path == str(model)
    np.testing.assert_array_equal(_run(session), _run(_open(model, cache=False)))


def test_a_damaged_copy_is_reported_and_made_again(tmp_path, caplog):
    model = _write_model(tmp_path / "model.onnx")
    copy = optimized_copy(model, onnxruntime.__version__)
    copy.parent.mkdir()
    copy.write_bytes(b"half a file")
    with caplog.at_level(logging.WARNING, logger="pictag.models.onnx_session"):
        session = _open(model)
    assert f"ignoring {copy}, which ONNX Runtime cannot open" in caplog.text
    np.testing.assert_array_equal(_run(session), _run(_open(model, cache=False)))
    assert _open(model)._model_path == str(copy)  # made again, whole


def test_a_missing_model_is_onnxruntimes_error(tmp_path):
    assert optimized_copy(tmp_path / "gone.onnx", onnxruntime.__version__) is None
    with pytest.raises(Exception, match=r"gone\.onnx"):
        _open(tmp_path / "gone.onnx")
