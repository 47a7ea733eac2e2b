"""Dynamic batching: the images of concurrent requests go through the model in one call.

Each request decodes its own images on a worker thread, then hands the tensors to the
:class:`Batcher` and waits. The batcher's one model thread takes every waiting request (up to
``max_images`` images), runs the model once on them all, and hands each request its rows. When
the model is idle, the first request waits ``wait_s`` (a few milliseconds) for company; when it
is busy, requests gather by themselves while the current batch runs. So under load the model
sees large batches (faster per image on every backend) instead of many calls of one image
fighting over the same cores, and the decoding of the next batch overlaps the model call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

Infer = Callable[[torch.Tensor], dict[str, np.ndarray]]
_EMA = 0.2  # weight of the latest batch in the seconds-per-image estimate


@dataclass
class _Job:
    images: torch.Tensor  # [n, C, H, W]
    future: asyncio.Future[dict[str, np.ndarray]]


class Batcher:
    """Gathers images from concurrent requests into batched model calls.

    Args:
        infer: The model call: transformed images ``[B, C, H, W]`` -> head -> ``[B, C]``.
        max_images: Most images in one call (a request with more runs alone).
        wait_s: How long the first request to an idle model waits for others.
    """

    def __init__(self, infer: Infer, max_images: int, wait_s: float) -> None:
        self.infer = infer
        self.max_images = max_images
        self.wait_s = wait_s
        self.seconds_per_image = 0.0  # measured; 0 until the first batch
        self.batches = 0
        self.images_done = 0
        self._pending: deque[_Job] = deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pictag-model")

    @property
    def queued_images(self) -> int:
        """Images waiting for the model (the batch being computed not included)."""
        return self._queued_images

    async def submit(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Head name -> probabilities ``[n, C]`` of ``images`` ``[n, C, H, W]``, computed in a
        batch with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.get_loop() is not loop or self._task.done():
            # Started lazily, on the loop of the requests (a test client may run each request
            # in an event loop of its own; jobs left from a finished loop have no one waiting).
            self._pending.clear()
            self._queued_images = 0
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._pending.append(_Job(images, future))
        self._queued_images += len(images)
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Stop the loop; requests still waiting get an error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.wait_s > 0 and self._queued_images < self.max_images:
                await asyncio.sleep(self.wait_s)  # an idle model: let concurrent requests join
            while self._pending:
                jobs = self._take()
                await self._compute(loop, jobs)

    def _take(self) -> list[_Job]:
        """The waiting jobs, oldest first, up to ``max_images`` images (at least one job)."""
        jobs = [self._pending.popleft()]
        count = len(jobs[0].images)
        while self._pending and count + len(self._pending[0].images) <= self.max_images:
            jobs.append(self._pending.popleft())
            count += len(jobs[-1].images)
        self._queued_images -= count
        return jobs

    async def _compute(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        images = torch.cat([job.images for job in jobs]) if len(jobs) > 1 else jobs[0].images
        start = loop.time()
        try:
            probs = await loop.run_in_executor(self._thread, self.infer, images)
        except Exception as err:  # every request of the batch fails (the app logs it: a 500)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self._measure(loop.time() - start, len(images))
        row = 0
        for job in jobs:
            rows = slice(row, row + len(job.images))
            row = rows.stop
            if not job.future.done():  # a request cancelled meanwhile wants nothing
                job.future.set_result({head: values[rows] for head, values in probs.items()})

    def _measure(self, seconds: float, images: int) -> None:
        per_image = seconds / max(images, 1)
        if self.batches == 0:
            self.seconds_per_image = per_image
        else:
            self.seconds_per_image += _EMA * (per_image - self.seconds_per_image)
        self.batches += 1
        self.images_done += images
