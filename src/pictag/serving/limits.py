"""What one server accepts: request size, image pixels, images per request, requests at once,
and how long a client may take to send its body.

Every limit is checked before the expensive step it guards: the declared body size before the
body is read, the running body size and the time it takes while it streams in, the pixel count
from the image header before decoding, and the number of requests in the server before any body
is read. A request over a limit gets a 4xx (408 for a body sent too slowly, 503 when the queue
is full) naming the limit and how to stay under it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

MB = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Limits of one server.

    Attributes:
        max_request_bytes: Largest request body (all images together, multipart or base64 JSON).
        max_image_pixels: Largest width * height of one image (a guard against decompression
            bombs, and against one huge photo holding a worker for seconds).
        max_images: Most images in one ``/predict`` request.
        max_queue: Requests in the server at once (being read, decoded, waiting for the model
            or in it); one more gets 503 with ``Retry-After`` (the time the queue needs), rather
            than the queue growing without bound.
        batch_images: Most images in one model call: the images of concurrent requests are run
            together (dynamic batching).
        batch_wait_ms: How long the first request to an idle model waits for others to join
            its batch (0: never wait).
        workers: Threads that check and decode images, so the event loop stays free to answer
            ``/health`` and the next batch is decoded while the model runs.
        body_timeout_s: Longest time a client may take to send a request body.
        body_idle_s: Longest pause while a client sends a body. A slow or stalled upload gets
            408 and its connection is closed, so stalled clients cannot hold the queue.
    """

    max_request_bytes: int = 20 * MB
    max_image_pixels: int = 40_000_000
    max_images: int = 16
    max_queue: int = 64
    batch_images: int = 32
    batch_wait_ms: int = 5
    workers: int = 2
    body_timeout_s: int = 60
    body_idle_s: int = 10

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            least = minimum(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                what = "a non-negative" if least == 0 else "a positive"
                raise ValueError(f"Limits.{name} must be {what} integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (shown by ``GET /model`` so clients can stay under the limits)."""
        return asdict(self)


def minimum(name: str) -> int:
    """The smallest value :class:`Limits` accepts for the field ``name``."""
    return 0 if name == "batch_wait_ms" else 1  # 0 ms: an idle model never waits


class RequestTooLarge(Exception):
    """The request body grew past ``Limits.max_request_bytes`` while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(too_large_message(limit))
        self.limit = limit


class BodyTimeout(Exception):
    """The client took too long to send the request body (answered with 408)."""


def too_large_message(limit: int) -> str:
    return (
        f"the request body is over the limit of {limit:,} bytes ({limit / MB:.1f} MB); send "
        "fewer or smaller images per request"
    )


class BodyLimits:
    """ASGI middleware that refuses bodies over ``max_bytes`` and bodies sent too slowly.

    A ``Content-Length`` over the limit is answered with 413 before the body is read. A body
    without one (chunked) or one that lies is counted as it streams; the endpoint reading it
    gets :class:`RequestTooLarge`, which the app turns into the same 413. A body whose next
    part does not come within ``idle_s``, or that is not complete within ``total_s`` of the
    first read, raises :class:`BodyTimeout` (a 408): uvicorn has no such timeout, and four
    stalled uploads would otherwise hold their places in the queue for as long as they like.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, idle_s: float, total_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, "request_too_large", too_large_message(self.max_bytes))
            return
        received = 0
        complete = False
        deadline: float | None = None

        async def guarded() -> Message:
            nonlocal received, complete, deadline
            if complete:  # after the body: a wait for the disconnect, which may be long
                return await receive()
            now = asyncio.get_running_loop().time()
            deadline = now + self.total_s if deadline is None else deadline
            wait = min(self.idle_s, deadline - now)
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(self._slow_message(received)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
            return message

        await self.app(scope, guarded, send)

    def _slow_message(self, received: int) -> str:
        return (
            f"the request body did not arrive in time ({received:,} bytes received; each part "
            f"must follow within {self.idle_s:g} s and the whole body within "
            f"{self.total_s:g} s); send it again in one go"
        )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed header before we see it
    return None


async def _send_json(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # Close the connection: the client may still be sending the body we will not read.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
