"""What the routes share: the predictor, its limits, the admission gate, the decoding threads and
the batcher that runs the model on the images of concurrent requests at once.

A ``/predict`` request is admitted (or turned away with 503 when ``max_queue`` requests are
already in the server), reads its body, has its images checked and decoded on a worker thread,
waits for the model in a batch with other requests (:mod:`pictag.serving.batching`), and builds
its predictions from its rows.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import torch

from pictag.data.images import ImageError
from pictag.evaluation.predictor import Loaded, Predictor
from pictag.heads import get_kind
from pictag.serving.batching import Batcher
from pictag.serving.errors import InputError
from pictag.serving.explain import Explanation, explain, spatial_refusal
from pictag.serving.limits import Limits
from pictag.serving.uploads import Upload, check_header, decode_problem, diagnose
from pictag.version import __version__

T = TypeVar("T")
MAX_RETRY_AFTER_S = 60


class Service:
    """The predictor with its limits, admission gate, worker threads and batcher."""

    def __init__(self, predictor: Predictor, limits: Limits, info: Mapping[str, Any]) -> None:
        self.predictor = predictor
        self.limits = limits
        self.max_pixels = min(limits.max_image_pixels, predictor.max_pixels)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="pictag-decode")
        self.batcher = Batcher(
            predictor.probabilities, limits.batch_images, limits.batch_wait_ms / 1000
        )
        self.active = 0
        self.info = model_info(predictor, limits, info)
        self.summary = {key: self.info[key] for key in ("name", "checkpoint_id", "version")}

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Count this request in, or answer 503 at once when ``max_queue`` are in already."""
        if self.active >= self.limits.max_queue:
            wait = self.retry_after()
            raise InputError(
                503,
                "busy",
                f"the server's queue is full ({self.limits.max_queue} requests); retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def retry_after(self) -> int:
        """Seconds the model needs for the work in the server now (at least one image per
        request), from its measured time per image; 1 to 60."""
        backlog = max(self.batcher.queued_images, self.active)
        seconds = math.ceil(backlog * self.batcher.seconds_per_image)
        return max(1, min(MAX_RETRY_AFTER_S, seconds))

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(function, *args))

    async def predict(
        self, uploads: list[Upload], top_k: int | None, at_least_one: bool
    ) -> list[dict[str, Any]]:
        """Predictions as dicts; the first unusable image fails the request with its 4xx."""
        if not uploads:
            return []
        loaded, images = await self.run(self.load, uploads)
        probs = await self.batcher.submit(images)
        predictions = self.predictor.assemble(loaded, probs, top_k, at_least_one)
        return [prediction.to_dict() for prediction in predictions]

    def load(self, uploads: list[Upload]) -> tuple[list[Loaded], torch.Tensor]:
        """Check and decode the images (on a worker thread): :meth:`Predictor.load`'s output
        and the stacked tensors; the first unusable image raises its 4xx."""
        for upload in uploads:
            check_header(upload, self.max_pixels)
        try:
            loaded = self.predictor.load([upload.file() for upload in uploads])
        except Exception as err:
            # A decoder that raises something other than ImageError on hostile bytes: find the
            # image and blame it; if every image decodes, the fault is ours (a 500).
            for upload in uploads:
                problem = decode_problem(upload, self.max_pixels)
                if problem is not None:
                    raise problem from err
            raise
        for upload, (_, image, _) in zip(uploads, loaded, strict=True):
            if isinstance(image, str):
                raise diagnose(upload, self.max_pixels, image)
        return loaded, torch.stack([image for _, image, _ in loaded])  # type: ignore[misc]

    def check_choice(self, head: str, label: str | None) -> None:
        heads = self.predictor.heads
        if head not in heads:
            raise InputError(
                422,
                "unknown_head",
                f"unknown head {head!r}; this model's heads: {', '.join(heads)}",
            )
        if label is not None and label not in heads[head].labels:
            shown = ", ".join(heads[head].labels[:50])
            raise InputError(
                422, "unknown_label", f"head {head!r} has no label {label!r}; its labels: {shown}"
            )
        kind = heads[head].kind
        if get_kind(kind).spatial:
            raise InputError(422, "cannot_explain", spatial_refusal(head, kind))

    def explain(self, upload: Upload, head: str, label: str | None) -> Explanation:
        check_header(upload, self.max_pixels)
        try:
            return explain(self.predictor, upload.file(), head, label)
        except ImageError as err:
            raise diagnose(upload, self.max_pixels, str(err)) from err
        except ValueError as err:  # head and label were checked: the model has no feature map
            raise InputError(501, "cannot_explain", f"Grad-CAM is not available: {err}") from err

    async def close(self) -> None:
        await self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` returns."""
        return {
            "status": "ok",
            "active_requests": self.active,
            "max_queue": self.limits.max_queue,
            "queued_images": self.batcher.queued_images,
            "batches": self.batcher.batches,
            "images": self.batcher.images_done,
            "images_per_batch": round(self.batcher.images_done / max(self.batcher.batches, 1), 2),
        }


def model_info(predictor: Predictor, limits: Limits, info: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /model`` returns (see :class:`pictag.serving.schemas.ModelInfo`)."""
    heads = []
    for name, head in predictor.heads.items():
        decision = get_kind(head.kind).export_meta(head, predictor.params[name])
        heads.append(
            {
                "name": name,
                "kind": head.kind,
                "labels": list(head.labels),
                "thresholds": decision.get("thresholds"),
                "decision": decision,
            }
        )
    return {
        "name": info.get("name", "model"),
        "checkpoint_id": info.get("checkpoint_id"),
        "version": __version__,
        "backbone": info.get("backbone"),
        "backend": predictor.backend,
        "heads": heads,
        "preprocess": predictor.preprocess.to_dict(),
        "limits": limits.to_dict(),
    }
