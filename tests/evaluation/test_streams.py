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
from pictag.export import export_run
from pictag.models import onnx_runner


@pytest.fixture(scope="module")
def exported_run(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    shutil.copytree(tiny_run.parent, root, dirs_exist_ok=True)
    export_run(root / "run")
    return root / "run"


@pytest.fixture
def threads():
    """Sets torch's thread budget for one test (the streams follow it)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _images(run_dir):
    return sorted((run_dir.parent / "data" / "images").glob("*.png"))[:10]


def test_two_batches_run_at_once_and_predict_what_one_at_a_time_does(exported_run, threads):
    threads(2)
    predictor = Predictor.from_run(exported_run, "cpu", "onnxruntime")
    call, count = predictor.runner.concurrent()
    assert count == onnx_runner.STREAMS == 2
    streamed = predictor.runner._streamed
    assert streamed is not predictor.runner.session
    assert streamed.get_session_options().intra_op_num_threads == 1  # 2 threads / 2 calls
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
    assert predictor.runner._streamed is None  # no second session for a single batch
