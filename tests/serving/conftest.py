"""The run folder for the server tests: one tiny trained multi-output run per session."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from pictag.config import load_config
from pictag.training.trainer import train

COLOURS = ("red", "green", "blue")
TAGS = {0: "warm", 1: "natural leafy", 2: "cool"}
SIZE = 16  # network input side


def colour_pixels(label: int, seed: int, size: int = 20) -> np.ndarray:
    """A noisy image whose dominant channel is its class."""
    pixels = np.random.default_rng(seed).integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[..., label] += 180
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained small_cnn run: multiclass ``colour`` + multilabel ``tags``; its images are in
    ``run.parent / 'images'``."""
    root = tmp_path_factory.mktemp("serving")
    rows = ["image,colour,tags"]
    for i in range(36):
        path = root / "images" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(colour_pixels(i % 3, seed=i)))
        rows.append(f"images/{i:03d}.png,{COLOURS[i % 3]},{TAGS[i % 3]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    overrides = [
        f"data.labels={root / 'labels.csv'}",
        "heads.colour.kind=multiclass",
        "heads.tags.kind=multilabel",
        "model.backbone=small_cnn",
        "model.pretrained=none",
        f"model.image_size={SIZE}",
        "train.batch_size=8",
        "train.lr=0.01",
        # A model that has learnt a little, with live feature maps for Grad-CAM; at the
        # from-scratch backbone rate (lr 0.01 for the small CNN too) its maps went flat.
        "train.backbone_lr_scale=0.1",
        "train.warmup_epochs=0",
        "train.augment=none",
        "train.epochs=2",
        "data.val_fraction=0.25",
    ]
    train(load_config(overrides=overrides), root / "run", progress=False)
    return root / "run"


@contextlib.contextmanager
def _served(run_dir: Path) -> Iterator[str]:
    """The app of ``run_dir`` on a free loopback port, served by uvicorn on a background
    thread; yields its URL."""
    import uvicorn

    from pictag.serving.app import app_from_run

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port meanwhile
    port = sock.getsockname()[1]
    config = uvicorn.Config(app_from_run(run_dir, device="cpu"), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(run_dir) as url``: the run's app served for a real browser."""
    return _served


def _only_this_server(route, server_url: str, elsewhere: list[str]) -> None:
    """A Playwright route handler: requests to the server (and blob:/data: URLs) go through,
    any other is recorded in ``elsewhere`` and aborted (the page must work offline)."""
    url = route.request.url
    if urlparse(url).netloc == urlparse(server_url).netloc or url.startswith(("blob:", "data:")):
        route.continue_()
    else:
        elsewhere.append(url)
        route.abort()


@pytest.fixture(scope="session")
def only_this_server():
    return _only_this_server


@pytest.fixture
def wait_until():
    """``wait(page, expression)``: poll a JavaScript expression until it is truthy (15 s at
    most). Playwright's ``wait_for_function`` evaluates a string expression again with
    ``eval`` when its first check is false, which the page's CSP (no 'unsafe-eval') refuses
    -- a race that failed a browser test once (fixed upstream in microsoft/playwright#36986);
    each ``page.evaluate`` is a single evaluation that the CSP allows."""

    def wait(page, expression: str, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not page.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout_s:g} s: {expression}")
            page.wait_for_timeout(50)  # lets Playwright serve the page's routed requests

    return wait
