"""Slow clients (issue 14, case 11): uploads that stall mid-body neither lock real requests out
nor hold their place for longer than the body timeouts. A real uvicorn server on loopback."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from pictag.serving.app import app_from_run
from pictag.serving.limits import Limits

HOST = "127.0.0.1"
STALLED = 4


def _png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def serving(run: Path, limits: Limits) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app_from_run(run, limits, "cpu"), host=HOST, port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def _stall(url: str) -> socket.socket:
    """A client that sends the headers and half of a 10,000-byte body, then nothing."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection((HOST, port), timeout=30)
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 10000\r\n\r\n"
    )
    part = (
        '--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    sock.sendall((head + part).encode() + b"x" * 5000)
    return sock


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _predict(url: str, image: bytes) -> int:
    files = [("files", ("a.png", image, "image/png"))]
    return httpx.post(f"{url}/predict", files=files, timeout=30).status_code


def _wait_active(url: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health").json()["active_requests"] != count:
        assert time.monotonic() < deadline, f"never {count} active requests"
        time.sleep(0.02)


def test_real_requests_are_served_while_four_uploads_stall(tiny_run):
    image = _png()
    with serving(tiny_run, Limits(body_idle_s=2, body_timeout_s=4)) as url:
        stalled = [_stall(url) for _ in range(STALLED)]
        _wait_active(url, STALLED)
        statuses = [_predict(url, image) for _ in range(20)]
        assert statuses == [200] * 20
        # Then the stalled uploads are cut off with a 408, and their places freed.
        for sock in stalled:
            answer = _answer(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"body_timeout" in answer
            sock.close()
        _wait_active(url, 0)


@pytest.mark.parametrize("limit", ["body_idle_s", "body_timeout_s"])
def test_stalled_uploads_that_fill_the_queue_are_dropped_by_the_timeouts(tiny_run, limit):
    # A queue of four, four stalled uploads: real requests get 503 (with Retry-After) only until
    # the body timeout frees the places.
    image = _png()
    timeouts = {"body_idle_s": 30, "body_timeout_s": 30, limit: 1}
    with serving(tiny_run, Limits(max_queue=STALLED, **timeouts)) as url:
        stalled = [_stall(url) for _ in range(STALLED)]
        if limit == "body_timeout_s":  # keep sending, slowly: only the total limit stops it
            for sock in stalled:
                sock.sendall(b"y")
        _wait_active(url, STALLED)
        busy = httpx.post(f"{url}/predict", files=[("files", ("a.png", image))], timeout=30)
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        for sock in stalled:
            assert _answer(sock).startswith(b"HTTP/1.1 408")
            sock.close()
        assert _predict(url, image) == 200
