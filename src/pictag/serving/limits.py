"""What one server accepts: request size, image pixels, images per request, requests at once.

Every limit is checked before the expensive step it guards: the declared body size before the
body is read, the running body size while it streams in, the pixel count from the image header
before decoding, and the number of requests in flight before any body is read. A request over
a limit gets a 4xx (or 503 when busy) naming the limit and how to stay under it.
"""

from __future__ import annotations

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
        max_concurrency: Requests handled at once; more get 503 with ``Retry-After`` at once,
            rather than queueing without bound.
        workers: Threads that run the model, so the event loop stays free to answer ``/health``
            and to turn away requests over the limits. Torch already spreads one forward pass
            over every core, so more workers mostly overlap decoding with inference.
    """

    max_request_bytes: int = 20 * MB
    max_image_pixels: int = 40_000_000
    max_images: int = 16
    max_concurrency: int = 4
    workers: int = 2

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (shown by ``GET /model`` so clients can stay under the limits)."""
        return asdict(self)


class RequestTooLarge(Exception):
    """The request body grew past ``Limits.max_request_bytes`` while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(too_large_message(limit))
        self.limit = limit


def too_large_message(limit: int) -> str:
    return (
        f"the request body is over the limit of {limit:,} bytes ({limit / MB:.1f} MB); send "
        "fewer or smaller images per request"
    )


class BodySizeLimit:
    """ASGI middleware that refuses bodies over ``max_bytes``.

    A ``Content-Length`` over the limit is answered with 413 before the body is read. A body
    without one (chunked) or one that lies is counted as it streams; the endpoint reading it
    gets :class:`RequestTooLarge`, which the app turns into the same 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, "request_too_large", too_large_message(self.max_bytes))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


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
