"""Dynamic batching (issue 14, case 10): concurrent requests share model calls, each gets its own
rows, a failing call fails only its requests, and Retry-After comes from the queue."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pictag.evaluation.predictor import Predictor
from pictag.serving.app import create_app
from pictag.serving.batching import Batcher
from pictag.serving.limits import Limits


def _png(seed: int) -> bytes:
    """A noisy image dominated by one of three colours (as the tiny run was trained on)."""
    pixels = np.random.default_rng(seed).integers(0, 60, (20, 20, 3), dtype=np.uint8)
    pixels[..., seed % 3] += 180
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(images: torch.Tensor) -> dict[str, np.ndarray]:
    """A fake model: each image's first pixel, so a request can check it got its own rows."""
    return {"head": images[:, 0, 0, :1].numpy().copy()}


def _images(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 1, 2).contiguous()


def _gather(batcher: Batcher, jobs: list[list[float]]) -> list[dict[str, np.ndarray]]:
    async def main() -> list[dict[str, np.ndarray]]:
        try:
            return await asyncio.gather(*(batcher.submit(_images(job)) for job in jobs))
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_concurrent_jobs_share_one_call_and_get_their_own_rows():
    sizes = []
    batcher = Batcher(lambda x: sizes.append(len(x)) or _rows(x), max_images=32, wait_s=0.05)
    jobs = [[float(i)] * (1 + i % 3) for i in range(8)]
    results = _gather(batcher, jobs)
    assert sizes == [15]  # one call for the 15 images of the 8 jobs
    for job, result in zip(jobs, results, strict=True):
        assert result["head"][:, 0].tolist() == job
    assert batcher.batches == 1 and batcher.images_done == 15 and batcher.queued_images == 0


def test_batches_hold_at_most_max_images_and_a_big_job_runs_alone():
    sizes = []
    batcher = Batcher(lambda x: sizes.append(len(x)) or _rows(x), max_images=4, wait_s=0.05)
    jobs = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0] * 6, [5.0]]
    results = _gather(batcher, jobs)
    assert sizes == [4, 2, 6, 1]  # oldest first; the 6-image request is not split
    assert [r["head"][:, 0].tolist() for r in results] == jobs


def test_a_failing_call_fails_its_jobs_and_the_batcher_goes_on():
    calls = []

    def model(images: torch.Tensor) -> dict[str, np.ndarray]:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return _rows(images)

    batcher = Batcher(model, max_images=8, wait_s=0.02)

    async def main() -> tuple[list[object], dict[str, np.ndarray]]:
        first = await asyncio.gather(
            batcher.submit(_images([1.0])), batcher.submit(_images([2.0])), return_exceptions=True
        )
        later = await batcher.submit(_images([3.0]))
        await batcher.close()
        return first, later

    first, later = asyncio.run(main())
    assert [str(r) for r in first] == ["model failed", "model failed"]
    assert later["head"][:, 0].tolist() == [3.0]


def test_32_concurrent_requests_are_all_answered_in_shared_batches(tiny_run, monkeypatch):
    predictor = Predictor.from_run(tiny_run)
    images = [_png(100 + i) for i in range(32)]
    expected = [p.to_dict()["heads"] for p in predictor.predict(images)]
    real_model = predictor.probabilities

    def slow_model(batch: torch.Tensor) -> dict[str, np.ndarray]:
        time.sleep(0.05)  # long enough for requests to pile up behind a call
        return real_model(batch)

    monkeypatch.setattr(predictor, "probabilities", slow_model)
    answers: dict[int, object] = {}
    with TestClient(create_app(predictor, Limits(max_queue=32))) as client:

        def post(i: int) -> None:
            files = [("files", (f"{i}.png", images[i], "image/png"))]
            answers[i] = client.post("/predict", files=files)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        health = client.get("/health").json()
    assert sorted(answers) == list(range(32))
    assert all(response.status_code == 200 for response in answers.values())
    for i in range(32):
        got = answers[i].json()["predictions"][0]["heads"]
        for head, prediction in got.items():
            assert prediction["labels"] == expected[i][head]["labels"]
            for label, score in prediction["scores"].items():
                assert score == pytest.approx(expected[i][head]["scores"][label], abs=1e-5)
    assert health["batches"] < 32 and health["images_per_batch"] > 1, health
    assert health["active_requests"] == 0 and health["queued_images"] == 0


def test_retry_after_is_the_time_the_queue_needs(tiny_run):
    predictor = Predictor.from_run(tiny_run)
    service = create_app(predictor, Limits(max_queue=10)).state.service
    assert service.retry_after() == 1  # nothing measured yet
    service.batcher.seconds_per_image = 0.5
    service.active = 10
    assert service.retry_after() == 5
    service.batcher.seconds_per_image = 30.0
    assert service.retry_after() == 60  # capped
