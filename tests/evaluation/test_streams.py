"""A long prediction on an exported model keeps two batches in the model at once, each call on
its share of the threads (a second ONNX Runtime session), and predicts exactly what one batch at
a time does."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from pictag.evaluation.predictor import Predictor
from pictag.models import onnx_runner


@pytest.fixture
def threads():
    """Sets torch's thread budget for one test (the streams follow it)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _stream_threads(runner) -> list[int]:
    """Intra-op threads of each stream session (they are idle: all in the queue)."""
    idle = runner._streams[1]
    sessions = [idle.get() for _ in range(idle.qsize())]
    for session in sessions:
        idle.put(session)
    return sorted(s.get_session_options().intra_op_num_threads for s in sessions)


def _images(run_dir):
    return sorted((run_dir.parent / "data" / "images").glob("*.png"))[:10]


def test_two_batches_run_at_once_and_predict_what_one_at_a_time_does(exported_run, threads):
    threads(2)
    predictor = Predictor.from_run(exported_run, "cpu", "onnxruntime")
    call, count = predictor.runner.concurrent()
    assert count == onnx_runner.STREAMS == 2
    assert _stream_threads(predictor.runner) == [1, 1]  # 2 threads, 2 sessions
    lock, busy, most = threading.Lock(), [0], [0]

    def counted(images):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.05)  # long enough for the next batch to arrive
        try:
            return call(images)
        finally:
            with lock:
                busy[0] -= 1

    predictor.runner.concurrent = lambda: (counted, count)
    files = _images(exported_run)
    got = predictor.predict(files, batch_size=2)
    assert most[0] == 2
    want = []
    for start in range(0, len(files), 2):
        loaded = predictor.load(files[start : start + 2])
        want += predictor.assemble(loaded, predictor.batch_probabilities(loaded))
    assert [p.source for p in got] == [str(f) for f in files]
    for a, b in zip(got, want, strict=True):
        assert a.heads.keys() == b.heads.keys()
        for name in a.heads:
            assert a.heads[name].labels == b.heads[name].labels
            np.testing.assert_allclose(
                list(a.heads[name].scores.values()), list(b.heads[name].scores.values()), atol=1e-6
            )


def test_one_thread_or_one_batch_runs_one_call_at_a_time(exported_run, threads):
    threads(1)
    predictor = Predictor.from_run(exported_run, "cpu", "onnxruntime")
    assert predictor.runner.concurrent() == (predictor.runner, 1)
    threads(2)
    assert predictor._model_call(1) == (predictor.probabilities, 1)
    assert predictor.runner._streams is None  # no second session for a single batch


def test_each_stream_has_its_own_session_and_share_of_the_threads(exported_run, threads):
    runner = Predictor.from_run(exported_run, "cpu", "onnxruntime").runner
    threads(3)
    runner.concurrent()
    assert _stream_threads(runner) == [1, 2]  # every thread used, none shared
    threads(4)
    runner.concurrent()  # the budget changed: sessions to match
    assert _stream_threads(runner) == [2, 2]


def test_a_file_changed_since_loading_is_not_run_beside_the_loaded_one(
    exported_run, threads, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(exported_run, run_dir)
    predictor = Predictor.from_run(run_dir, "cpu", "onnxruntime")
    onnx = run_dir / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")  # a re-export would change size and time
    threads(2)
    assert predictor.runner.concurrent() == (predictor.runner, 1)
    files = _images(run_dir)[:4]
    # Every batch through the session that was loaded, whatever the batch size.
    one = predictor.predict(files, batch_size=4)
    two = predictor.predict(files, batch_size=2)
    assert [p.to_dict() for p in one] == [p.to_dict() for p in two]


def test_a_failing_model_call_fails_predict(exported_run, threads):
    threads(2)
    predictor = Predictor.from_run(exported_run, "cpu", "onnxruntime")

    def broken(images):
        raise RuntimeError("out of memory")

    predictor.runner.concurrent = lambda: (broken, 2)
    with pytest.raises(RuntimeError, match="out of memory"):
        predictor.predict(_images(exported_run), batch_size=2)
