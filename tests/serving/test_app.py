"""The HTTP app: every endpoint, every kind of bad input (a clear 4xx, never a 500), the limits,
and the ``pictag serve`` command."""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pictag.cli import main
from pictag.config import HeadConfig, ModelConfig, load_config
from pictag.data.schema import Head
from pictag.evaluation.predictor import Predictor
from pictag.run import build_model, run_meta, save_model
from pictag.serving import server
from pictag.serving.app import app_from_run, create_app
from pictag.serving.limits import Limits
from pictag.serving.schemas import ErrorOut, Health, ModelInfo, PredictResponse

SIZE = 16


def colour_pixels(label: int, seed: int, size: int = 20) -> np.ndarray:
    """A noisy image whose dominant channel is its class (as the tiny run was trained on)."""
    pixels = np.random.default_rng(seed).integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[..., label] += 180
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_untrained_run(run_dir: Path, heads: dict[str, tuple[str, tuple[str, ...]]]) -> Path:
    """A run folder (weights + ``pictag.json``) of an untrained small_cnn with ``heads``
    (name -> (kind, labels)), as ``pictag train`` would write it."""
    torch.manual_seed(0)
    specs = {name: Head(name, kind, labels) for name, (kind, labels) in heads.items()}
    head_cfgs = {name: HeadConfig(kind=kind) for name, (kind, _) in heads.items()}
    config = load_config(
        overrides=["model.backbone=small_cnn", "model.pretrained=none", f"model.image_size={SIZE}"]
    )
    config.heads = head_cfgs
    model, pre = build_model(
        ModelConfig(backbone="small_cnn", pretrained="none", image_size=SIZE), specs, head_cfgs
    )
    params = {
        name: {"thresholds": [0.4] * len(labels)}
        for name, (kind, labels) in heads.items()
        if kind == "multilabel"
    }
    save_model(run_dir, model.state_dict(), run_meta(config, specs, pre, params))
    return run_dir


TASK_KINDS = {
    "multiclass": {"digit": ("multiclass", tuple("0123456789"))},
    "multilabel": {"tags": ("multilabel", ("desert", "sea", "sunset", "trees"))},
    "multioutput": {
        "brand": ("multiclass", ("audi", "bmw", "fiat")),
        "features": ("multilabel", ("roof rack", "tow bar")),
    },
}


@pytest.fixture(scope="module")
def predictor(tiny_run: Path) -> Predictor:
    return Predictor.from_run(tiny_run, "cpu")


@pytest.fixture(scope="module")
def client(tiny_run: Path) -> TestClient:
    # raise_server_exceptions (the default): an exception that reaches the 500 handler fails
    # the test, so every bad-input test also proves no bad input gets that far.
    return TestClient(app_from_run(tiny_run, device="cpu"))


def red() -> bytes:
    return encode(colour_pixels(0, seed=100))


def green() -> bytes:
    return encode(colour_pixels(1, seed=101), "JPEG")


def text_parts(**fields: str) -> dict:
    """Request arguments for a multipart body of text fields only (httpx would send those
    url-encoded)."""
    boundary = "pictag-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return {
        "content": ("".join(parts) + f"--{boundary}--\r\n").encode(),
        "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
    }


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def assert_error(response, status: int, code: str, *words: str) -> None:
    """A JSON error of the one documented shape, with the words that make it clear."""
    assert response.status_code == status, response.text
    body = ErrorOut.model_validate(response.json())
    assert body.error == code, body
    for word in words:
        assert word in body.detail, body.detail


def test_page_is_a_self_contained_upload_form(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<input id="file" type="file"' in page
    # Nothing loaded from elsewhere: it must work offline, and the policy forbids it anyway.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_health(client):
    body = client.get("/health").json()
    expected = Health(
        status="ok",
        active_requests=0,
        max_queue=64,
        queued_images=0,
        batches=0,
        images=0,
        images_per_batch=0.0,
    )
    assert Health.model_validate(body) == expected


def test_model_describes_heads_thresholds_preprocessing_and_limits(client, predictor, tiny_run):
    body = ModelInfo.model_validate(client.get("/model").json())
    assert body.name == tiny_run.name
    assert body.backbone == "small_cnn"
    assert body.backend == predictor.backend
    assert body.checkpoint_id and len(body.checkpoint_id) == 32
    heads = {head.name: head for head in body.heads}
    assert list(heads) == ["colour", "tags"]
    assert heads["colour"].kind == "multiclass"
    assert heads["colour"].labels == list(predictor.heads["colour"].labels)
    assert heads["colour"].thresholds is None
    assert heads["tags"].kind == "multilabel"
    assert heads["tags"].thresholds == pytest.approx(predictor.params["tags"]["thresholds"])
    assert heads["tags"].decision["activation"] == "sigmoid"
    assert heads["colour"].decision == {"activation": "softmax", "decision": "argmax"}
    assert body.preprocess == predictor.preprocess.to_dict()
    assert body.limits == Limits().to_dict()


def test_openapi_documents_every_route_and_both_request_bodies(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/explain", "/model", "/health"} <= set(spec["paths"])
    assert "/" not in spec["paths"]
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert client.get("/docs").status_code == 200


def test_predict_multipart_equals_the_predictor(client, predictor):
    response = client.post("/predict", files=files(("red.png", red()), ("green.jpg", green())))
    assert response.status_code == 200, response.text
    body = PredictResponse.model_validate(response.json()).model_dump()
    assert [p["source"] for p in body["predictions"]] == ["red.png", "green.jpg"]
    expected = [p.to_dict() for p in predictor.predict([red(), green()])]
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["heads"].keys() == want["heads"].keys()
        for name, head in want["heads"].items():
            assert got["heads"][name]["labels"] == head["labels"]
            assert got["heads"][name]["scores"] == pytest.approx(head["scores"], abs=1e-6)
            # Scores keep their high-to-low order through JSON.
            assert list(got["heads"][name]["scores"]) == list(head["scores"])
    assert body["model"]["name"] == "run"


def test_predict_base64_json_equals_multipart(client):
    data = red()
    plain = base64.b64encode(data).decode()
    wrapped = "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))  # as `base64` prints
    data_url = "data:image/png;base64," + plain
    url_safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    by_json = client.post("/predict", json={"images": [plain, wrapped, data_url, url_safe]})
    by_form = client.post("/predict", files=files(("red.png", data)))
    assert by_json.status_code == 200, by_json.text
    predictions = by_json.json()["predictions"]
    assert [p["source"] for p in predictions] == [f"images[{i}]" for i in range(4)]
    want = by_form.json()["predictions"][0]["heads"]
    for prediction in predictions:
        # Batches of 4 and of 1 may differ in the last float bits.
        for name, head in prediction["heads"].items():
            assert head["labels"] == want[name]["labels"]
            assert head["scores"] == pytest.approx(want[name]["scores"], abs=1e-6)


def test_predict_options_are_passed_on(client, predictor):
    response = client.post("/predict?top_k=1&at_least_one=true", files=files(("r.png", red())))
    assert response.status_code == 200
    got = response.json()["predictions"][0]["heads"]
    want = predictor.predict(red(), top_k=1, at_least_one=True)[0].to_dict()["heads"]
    for name in want:
        assert got[name]["labels"] == want[name]["labels"]
        assert list(got[name]["scores"]) == list(want[name]["scores"])
        assert len(got[name]["scores"]) == 1


@pytest.mark.parametrize("task", sorted(TASK_KINDS))
def test_same_response_shape_for_every_task_kind(task, tmp_path):
    run = write_untrained_run(tmp_path / task, TASK_KINDS[task])
    response = TestClient(app_from_run(run, device="cpu")).post(
        "/predict", files=files(("a.png", red()), ("b.png", red()))
    )
    assert response.status_code == 200, response.text
    body = PredictResponse.model_validate(response.json())
    assert set(response.json()) == {"predictions", "model"}
    for prediction in body.predictions:
        assert set(prediction.heads) == set(TASK_KINDS[task])
        for name, head in prediction.heads.items():
            kind, labels = TASK_KINDS[task][name]
            assert head.kind == kind
            assert set(head.scores) == set(labels)
            assert set(head.labels) <= set(labels)
            assert kind == "multilabel" or len(head.labels) == 1


def _png_header_only() -> bytes:
    return red()[:20]


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# (id, request keyword arguments, status, error code, words the message must contain)
BAD_REQUESTS = [
    (
        "text file",
        {"files": files(("notes.txt", b"hello, world\n" * 20))},
        415,
        "not_an_image",
        ["notes.txt", "not an image"],
    ),
    (
        "html page",
        {"files": files(("cat.jpg", b"<!DOCTYPE html><html>404</html>"))},
        415,
        "not_an_image",
        ["cat.jpg", "HTML"],
    ),
    (
        "truncated png",
        {"files": files(("a.png", _half(red())))},
        422,
        "truncated_image",
        ["a.png", "truncated"],
    ),
    (
        "truncated jpeg",
        {"files": files(("g.jpg", _half(green())))},
        422,
        "truncated_image",
        ["g.jpg", "truncated"],
    ),
    (
        "png header only",
        {"files": files(("h.png", _png_header_only()))},
        422,
        "truncated_image",
        ["h.png"],
    ),
    ("empty file", {"files": files(("e.png", b""))}, 422, "empty_image", ["e.png", "empty"]),
    (
        "second image bad",
        {"files": files(("ok.png", red()), ("bad.png", b"nope" * 10))},
        415,
        "not_an_image",
        ["files[1]", "bad.png"],
    ),
    (
        "too elongated",
        {"files": files(("strip.png", encode(np.zeros((1, 60, 3), np.uint8))))},
        422,
        "too_elongated",
        ["1", "60", "50:1"],
    ),
    (
        "wrong field",
        {"files": [("file", ("a.png", red(), "image/png"))]},
        422,
        "wrong_field",
        ["'file'", "files"],
    ),
    ("text instead of file", text_parts(files="a.png"), 422, "not_a_file", ["files[0]", "text"]),
    ("url-encoded form", {"data": {"files": "a.png"}}, 415, "unsupported_content_type", ["files"]),
    ("no body", {}, 400, "empty_request", ["no images", "files"]),
    ("json without images", {"json": {"image": "abc"}}, 422, "missing_field", ["images"]),
    ("json images not a list", {"json": {"images": "abc"}}, 422, "wrong_field", ["list"]),
    ("json image not a string", {"json": {"images": [12]}}, 422, "wrong_field", ["images[0]"]),
    ("json empty list", {"json": {"images": []}}, 400, "empty_request", ["no images"]),
    ("json extra key", {"json": {"images": ["x"], "top_k": 2}}, 422, "wrong_field", ["top_k"]),
    ("json list body", {"json": ["abc"]}, 422, "missing_field", ["images"]),
    (
        "bad json",
        {"content": b"{images: [", "headers": {"content-type": "application/json"}},
        400,
        "bad_json",
        ["not valid JSON"],
    ),
    (
        "json nested 100,000 levels deep",
        {
            "content": b"[" * 100_000 + b"]" * 100_000,
            "headers": {"content-type": "application/json"},
        },
        400,
        "bad_json",
        ["nested too deeply"],
    ),
    ("bad base64", {"json": {"images": ["not base64!"]}}, 422, "bad_base64", ["images[0]"]),
    (
        "base64 of text",
        {"json": {"images": [base64.b64encode(b"plain text").decode()]}},
        415,
        "not_an_image",
        ["images[0]"],
    ),
    (
        "plain text body",
        {"content": b"hi", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_content_type",
        ["text/plain", "files"],
    ),
    (
        "multipart without boundary",
        {"content": b"--x--", "headers": {"content-type": "multipart/form-data"}},
        400,
        "bad_request",
        ["multipart"],
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
def test_bad_input_gets_a_clear_4xx(client, kwargs, status, code, words):
    response = client.post("/predict", **kwargs)
    assert_error(response, status, code, *words)


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [
        ("/predict?top_k=0", "post", 422, "invalid_parameter"),
        ("/predict?top_k=many", "post", 422, "invalid_parameter"),
        ("/predict", "get", 405, "method_not_allowed"),
        ("/nothing-here", "get", 404, "not_found"),
    ],
)
def test_bad_parameters_and_routes(client, path, method, status, code):
    response = (
        getattr(client, method)(path, files=files(("a.png", red())))
        if method == "post"
        else client.get(path)
    )
    assert_error(response, status, code)


def test_limits_on_images_pixels_and_request_size(predictor):
    limits = Limits(max_request_bytes=4000, max_image_pixels=300, max_images=2)
    client = TestClient(create_app(predictor, limits))
    small = encode(colour_pixels(0, seed=1, size=10))  # 100 pixels
    big = encode(colour_pixels(0, seed=1, size=20))  # 400 pixels
    assert client.post("/predict", files=files(("s.png", small))).status_code == 200
    assert_error(
        client.post("/predict", files=files(("b.png", big))), 413, "too_many_pixels", "b.png", "300"
    )
    assert_error(
        client.post("/predict", files=files(*[("s.png", small)] * 3)),
        413,
        "too_many_images",
        "3 images",
        "limit of 2",
    )
    noise = np.random.default_rng(0).integers(0, 255, (10, 10, 3), np.uint8)
    assert_error(
        client.post("/predict", files=files(("n.bmp", encode(noise, "BMP") * 20))),
        413,
        "request_too_large",
        "4,000 bytes",
    )
    # A body without Content-Length is counted as it streams in.
    chunked = client.post(
        "/predict",
        content=iter([b"x" * 3000, b"x" * 3000]),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, "request_too_large")


def _corrupted(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Images of every common format, cut short or with bytes flipped."""
    pixels = colour_pixels(2, seed=5, size=24)
    out = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        data = encode(pixels, fmt)
        for cut in (2, 6, 12, 30, 60, len(data) // 2, len(data) - 3):
            out.append((f"{fmt}-cut{cut}", data[:cut]))
        for i in range(4):
            flipped = bytearray(data)
            for where in rng.integers(0, len(data), 6):
                flipped[where] ^= 0xFF
            out.append((f"{fmt}-flip{i}", bytes(flipped)))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt TIFF tags
def test_corrupted_images_never_reach_the_500_handler(client):
    for name, data in _corrupted(np.random.default_rng(0)):
        response = client.post("/predict", files=files((name, data)))
        assert response.status_code in (200, 413, 415, 422), (name, response.text)
        if response.status_code != 200:
            ErrorOut.model_validate(response.json())
            assert name in response.json()["detail"]


def test_a_full_queue_answers_503_and_health_stays_responsive(predictor, monkeypatch):
    release, started = threading.Event(), threading.Event()
    real_model = predictor.probabilities

    def slow_model(*args, **kwargs):
        started.set()
        assert release.wait(10)
        return real_model(*args, **kwargs)

    monkeypatch.setattr(predictor, "probabilities", slow_model)
    results = {}
    with TestClient(create_app(predictor, Limits(max_queue=1))) as client:
        worker = threading.Thread(
            target=lambda: results.update(first=client.post("/predict", files=files(("a", red()))))
        )
        worker.start()
        assert started.wait(10)
        # The model is busy on a worker thread; the event loop still answers.
        assert client.get("/health").json()["active_requests"] == 1
        busy = client.post("/predict", files=files(("b.png", red())))
        assert_error(busy, 503, "busy", "queue is full (1 requests)")
        assert busy.headers["retry-after"] == "1"
        release.set()
        worker.join(10)
        assert results["first"].status_code == 200
        assert client.get("/health").json()["active_requests"] == 0


def test_unexpected_errors_are_logged_and_answered_with_a_generic_500(
    predictor, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(predictor, "probabilities", broken)
    client = TestClient(create_app(predictor), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="pictag.serving"):
        response = client.post("/predict", files=files(("a.png", red())))
    assert_error(response, 500, "internal_error", "log")
    assert "secret" not in response.text
    assert any("secret internal state" in (r.exc_text or "") for r in caplog.records)
    # The server is still up.
    assert client.get("/health").status_code == 200


def test_explain_returns_a_png_for_the_top_or_the_chosen_label(client, predictor):
    top = predictor.predict(red())[0].heads["colour"].labels[0]
    response = client.post(
        "/explain", files={"file": ("red.png", red(), "image/png")}, data={"head": "colour"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-pictag-label"] == top
    assert 0 < float(response.headers["x-pictag-probability"]) <= 1
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    chosen = client.post(
        "/explain",
        files={"file": ("red.png", red(), "image/png")},
        data={"head": "tags", "label": "natural"},
    )
    assert chosen.status_code == 200
    assert chosen.headers["x-pictag-head"] == "tags"
    assert chosen.headers["x-pictag-label"] == "natural"


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "words"),
    [
        (text_parts(head="colour"), 422, "wrong_field", ["exactly one image"]),
        (
            {"file": ("a.png", red()), "data": {"head": "shape"}},
            422,
            "unknown_head",
            ["'shape'", "colour, tags"],
        ),
        (
            {"file": ("a.png", red()), "data": {"head": "colour", "label": "pink"}},
            422,
            "unknown_label",
            ["'pink'", "red"],
        ),
        ({"file": ("a.png", red()), "data": {}}, 422, "missing_field", ["'head'"]),
        (
            {"file": ("a.txt", b"text " * 10), "data": {"head": "colour"}},
            415,
            "not_an_image",
            ["a.txt"],
        ),
        (
            {"file": ("a.png", _half(red())), "data": {"head": "colour"}},
            422,
            "truncated_image",
            ["a.png"],
        ),
        ({"json": {"head": "colour"}}, 415, "unsupported_content_type", ["json", "'file'"]),
        ({}, 400, "unsupported_content_type", ["(none)", "'file'"]),
        (
            {"file": ("a.png", red()), "data": {"head": "colour", "color": "x"}},
            422,
            "wrong_field",
            ["'color'"],
        ),
    ],
    ids=[
        "no file",
        "unknown head",
        "unknown label",
        "no head",
        "not an image",
        "truncated",
        "json",
        "no body",
        "extra field",
    ],
)
def test_explain_bad_input(client, kwargs, status, code, words):
    if "file" in kwargs:
        name, data = kwargs.pop("file")
        kwargs["files"] = {"file": (name, data, "application/octet-stream")}
    assert_error(client.post("/explain", **kwargs), status, code, *words)


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_images"):
        Limits(max_images=0)
    with pytest.raises(ValueError, match="workers"):
        Limits(workers=True)
    with pytest.raises(ValueError, match="batch_wait_ms must be a non-negative"):
        Limits(batch_wait_ms=-1)
    assert Limits(batch_wait_ms=0).batch_wait_ms == 0


def test_serve_command_binds_to_loopback_by_default(tiny_run, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", str(tiny_run), "--port", "8123", "--max-batch", "3"]) == 0
    app, options = calls[0]
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    assert app.state.service.limits.max_images == 3
    captured = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in captured.out
    assert captured.err == ""
    # Opening it to the network is possible, with a warning.
    flags = ["--max-queue", "2", "--batch-images", "8", "--batch-wait-ms", "0", "--body-idle", "3"]
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0", *flags]) == 0
    assert calls[1][1]["host"] == "0.0.0.0"
    limits = calls[1][0].state.service.limits
    assert (limits.max_queue, limits.batch_images, limits.batch_wait_ms) == (2, 8, 0)
    assert (limits.body_idle_s, limits.body_timeout_s) == (3, Limits().body_timeout_s)
    assert "no authentication" in capsys.readouterr().err


def test_serve_command_reports_bad_flags_and_folders(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a pictag run folder" in capsys.readouterr().err
