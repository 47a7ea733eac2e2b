"""Decoding overlapped with inference: results in input order and identical to decoding each
batch when it is needed, with an unreadable image handled as before."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pictag.evaluation.predictor import Predictor
from pictag.evaluation.prefetch import batches, in_flight, prefetched


def test_chunks_come_back_whole_and_in_order_whatever_finishes_first():
    rng = random.Random(0)
    delays = {i: rng.uniform(0, 0.01) for i in range(23)}

    def load(item: int) -> int:
        time.sleep(delays[item])  # later items often finish first
        return item * 10

    chunks = [list(range(start, min(start + 5, 23))) for start in range(0, 23, 5)]
    with ThreadPoolExecutor(4) as pool:
        got = list(prefetched(load, chunks, pool, list))
    assert got == [[i * 10 for i in chunk] for chunk in chunks]
    with ThreadPoolExecutor(2) as pool:
        assert list(prefetched(load, [], pool, list)) == []


def test_the_next_chunk_loads_while_the_caller_works():
    started: list[int] = []
    lock = threading.Lock()

    def load(item: int) -> int:
        with lock:
            started.append(item)
        return item

    chunks = [[0, 1], [2, 3], [4, 5]]
    with ThreadPoolExecutor(2) as pool:
        batches = prefetched(load, chunks, pool, list)
        assert next(batches) == [0, 1]
        deadline = time.monotonic() + 5
        while len(started) < 4 and time.monotonic() < deadline:  # the caller "computes"
            time.sleep(0.001)
        assert sorted(started) == [0, 1, 2, 3]  # the second chunk, not yet the third
        assert list(batches) == [[2, 3], [4, 5]]


def test_an_error_in_load_comes_out_of_its_chunk_and_stops_the_prefetch():
    release = threading.Event()
    loaded: list[int] = []

    def load(item: int) -> int:
        if item == 1:
            raise RuntimeError("boom")
        release.wait(5)
        loaded.append(item)
        return item

    with ThreadPoolExecutor(1) as pool:
        batches = prefetched(load, [[0, 1], [2, 3], [4, 5]], pool, list)
        release.set()
        with pytest.raises(RuntimeError, match="boom"):
            next(batches)
    assert 4 not in loaded and 5 not in loaded  # the chunk after never started


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_in_flight_runs_up_to_streams_calls_at_once_and_keeps_the_order(streams):
    lock, busy, most = threading.Lock(), [0], [0]
    rng = random.Random(streams)

    def call(value: int) -> int:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(rng.uniform(0.01, 0.03))  # later calls often finish first
        with lock:
            busy[0] -= 1
        return value * 10

    taken: list[int] = []

    def batches():
        for index in range(8):
            taken.append(index)
            # A batch may take at most `streams` calls' worth of inputs ahead of the caller.
            assert index - len(given) <= streams
            yield f"batch {index}", None if index == 5 else index

    given: list[tuple[str, int | None]] = []
    with ThreadPoolExecutor(4) as pool:
        for item in in_flight(batches(), call, pool, streams):
            given.append(item)
    assert given == [(f"batch {i}", None if i == 5 else i * 10) for i in range(8)]
    assert most[0] == streams


def test_in_flight_stops_its_source_and_the_waiting_calls_when_a_call_fails():
    closed = threading.Event()
    taken: list[int] = []

    def batches():
        try:
            for index in range(10):
                taken.append(index)
                yield index, index
        finally:
            closed.set()  # the source was closed, not left to the garbage collector

    def call(value: int) -> int:
        if value == 1:
            raise RuntimeError("boom")
        time.sleep(0.05)
        return value

    with ThreadPoolExecutor(1) as pool:
        results = in_flight(batches(), call, pool, 2)
        with pytest.raises(RuntimeError, match="boom"):
            list(results)
    assert closed.is_set() and len(taken) < 10


@pytest.fixture
def folder_with_a_bad_image(tiny_run, tmp_path):
    """Readable images, one JPEG larger than the input size, and a truncated PNG in the middle."""
    images = sorted((tiny_run.parent / "data" / "images").glob("*.png"))[:9]
    big = tmp_path / "big.jpg"
    pixels = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(big, quality=90)  # reduced-size decoding applies
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return [*images[:4], broken, big, *images[4:]]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_overlapped_predict_equals_one_batch_at_a_time(
    tiny_run, folder_with_a_bad_image, batch_size
):
    predictor = Predictor.from_run(tiny_run, "cpu")
    files = folder_with_a_bad_image
    got = predictor.predict(files, batch_size=batch_size)
    # The path without overlap, as the server runs it: load, the model call, assemble.
    want = []
    for start in range(0, len(files), batch_size):
        loaded = predictor.load(files[start : start + batch_size])
        want += predictor.assemble(loaded, predictor.batch_probabilities(loaded))
    assert [p.source for p in got] == [str(f) for f in files]
    assert [p.to_dict() for p in got] == [p.to_dict() for p in want]
    bad = got[4]
    assert bad.heads == {} and "truncated" in bad.error and bad.error == want[4].error
    assert all(p.error is None and p.heads for i, p in enumerate(got) if i != 4)


@pytest.mark.parametrize(
    ("count", "size", "streams", "sizes"),
    [
        (200, 32, 1, [32] * 6 + [8]),
        (200, 32, 2, [25] * 8),
        (224, 32, 2, [28] * 8),
        (65, 32, 2, [17, 16, 16, 16]),
        (64, 32, 2, [32, 32]),
        (3, 32, 2, [2, 1]),
        (1, 32, 2, [1]),
        (0, 32, 2, []),
        (7, 2, 3, [2, 1, 1, 1, 1, 1]),
    ],
)
def test_batches_keep_the_order_and_even_out_for_the_streams(count, size, streams, sizes):
    items = list(range(count))
    got = batches(items, size, streams)
    assert [len(batch) for batch in got] == sizes
    assert [item for batch in got for item in batch] == items


def test_batches_refuse_a_size_or_streams_below_one():
    with pytest.raises(ValueError, match="size and streams"):
        batches([1, 2], 0)
    with pytest.raises(ValueError, match="size and streams"):
        batches([1, 2], 2, 0)
