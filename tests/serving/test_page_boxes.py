"""A detection head on the server and its web page: ``/predict`` gives boxes in the uploaded
image's pixels, the page draws one SVG rect per box exactly there and lists them in the head's
card, and Grad-CAM (``/explain`` and the page's explain controls) is refused for such a head.

The browser test needs Playwright for Python and Debian's Chromium, as test_browser.py does."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictag.cli import main
from pictag.evaluation.predictor import Predictor
from pictag.serving.app import app_from_run
from pictag.serving.explain import explain

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000
SPATIAL_REFUSAL = (
    "Grad-CAM explains image-level heads; objects is a detection head whose boxes show where it "
    "looked"
)


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory: pytest.TempPathFactory, make_voc) -> tuple[Path, Path]:
    """(VOC folder, run folder) of a detection head ``objects`` trained for a few seconds."""
    tmp = tmp_path_factory.mktemp("page-boxes")
    voc = make_voc(tmp / "voc", 24)
    run = tmp / "run"
    args = ["train", "--images", str(voc), "--out", str(run)]
    for setting in (
        "heads.objects.kind=detection",
        "model.backbone=test_efficientnet",
        "model.pretrained=none",
        "model.image_size=64",
        # 8 epochs of 3 batches (seconds on an idle CPU): boxes on most images; 4 epochs of
        # the default batch of 32 (one step each) find none.
        "train.epochs=8",
        "train.batch_size=8",
        "train.lr=0.003",
        "train.budget=off",
    ):
        args += ["--set", setting]
    assert main(args) == 0
    return voc, run


@pytest.fixture(scope="module")
def client(detection_run) -> TestClient:
    return TestClient(app_from_run(detection_run[1], device="cpu"))


def predict(client: TestClient, name: str, data: bytes) -> dict:
    response = client.post("/predict", files={"files": (name, data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["heads"]["objects"]


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def most_boxes(client: TestClient, voc: Path) -> tuple[Path, dict]:
    """The training image the model finds the most boxes in, and its prediction."""
    found = [(p, predict(client, p.name, p.read_bytes())) for p in sorted(voc.glob("*/*.png"))]
    return max(found, key=lambda item: len(item[1]["objects"]))


def test_predict_gives_boxes_in_the_uploaded_images_pixels(detection_run, client):
    voc, _ = detection_run
    # Each image at twice the training images' 96x72 (and far from the 64x64 network input):
    # the boxes must come back in this file's pixels.
    compared, matched = 0, 0
    for image in sorted(voc.glob("*/*.png")):
        big = io.BytesIO()
        Image.open(image).resize((192, 144)).save(big, format="PNG")
        head = predict(client, "big.png", big.getvalue())
        small = predict(client, image.name, image.read_bytes())
        assert head["kind"] == "detection"
        assert set(head["labels"]) == {item["label"] for item in head["objects"]}
        for item in head["objects"]:
            x1, y1, x2, y2 = item["box"]
            assert 0 <= x1 < x2 <= 192 and 0 <= y1 < y2 <= 144, item
            assert item["label"] in ("red", "blue") and 0 <= item["score"] <= 1
            # The network sees nearly the same 64x64 either way: the same box, scaled by 2 (a
            # score right at its threshold may make a box come, go or move a little).
            twice = [
                [2 * v for v in other["box"]]
                for other in small["objects"]
                if other["label"] == item["label"]
            ]
            if twice:
                compared += 1
                matched += max(iou(item["box"], box) for box in twice) > 0.7
    assert compared >= 10  # the model finds boxes, or the page has nothing to draw
    assert matched >= 0.8 * compared, (matched, compared)


def test_grad_cam_refuses_a_detection_head(detection_run):
    voc, run = detection_run
    image = next((voc / "JPEGImages").glob("*.png"))
    with pytest.raises(ValueError) as refused:
        explain(Predictor.from_run(run, "cpu"), image, "objects")
    assert str(refused.value) == SPATIAL_REFUSAL


def test_explain_endpoint_refuses_a_detection_head_with_a_4xx(detection_run, client):
    image = next((detection_run[0] / "JPEGImages").glob("*.png"))
    response = client.post(
        "/explain",
        files={"file": (image.name, image.read_bytes(), "image/png")},
        data={"head": "objects"},
    )
    assert SPATIAL_REFUSAL in response.json()["detail"]  # a clear refusal, never a 500
    assert 400 <= response.status_code < 500, response.text


@pytest.fixture(scope="module")
def server_url(detection_run, live_server) -> Iterator[str]:
    with live_server(detection_run[1]) as url:
        yield url


def test_the_page_draws_the_boxes_over_the_image(
    detection_run, client, server_url, only_this_server, wait_until
):
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM} (Debian: apt install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
        pytest.skip(message)
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed"
    )
    image, expected = most_boxes(client, detection_run[0])
    objects = expected["objects"]
    assert objects
    elsewhere: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", lambda route: only_this_server(route, server_url, elsewhere))
            page.goto(server_url)
            wait_until(page, "document.getElementById('model').textContent.includes('run')")
            page.set_input_files("#file", str(image))
            card = page.locator(".head[data-head='objects']")
            card.wait_for()
            wait_until(
                page, f"document.querySelectorAll('#boxes rect.box').length === {len(objects)}"
            )
            svg = page.locator("#boxes")
            assert svg.get_attribute("viewBox") == "0 0 96 72"  # the image's own pixels
            rects = svg.locator("rect.box").evaluate_all(
                "rects => rects.map(r => ({label: r.dataset.label, x: +r.getAttribute('x'),"
                " y: +r.getAttribute('y'), w: +r.getAttribute('width'),"
                " h: +r.getAttribute('height')}))"
            )
            for rect, item in zip(rects, objects, strict=True):
                x1, y1, x2, y2 = item["box"]
                assert rect["label"] == item["label"]
                assert rect["x"] == pytest.approx(x1) and rect["y"] == pytest.approx(y1)
                assert rect["w"] == pytest.approx(x2 - x1) and rect["h"] == pytest.approx(y2 - y1)
            texts = svg.locator("text.box-label").all_text_contents()
            assert [t.split()[0] for t in texts] == [item["label"] for item in objects]
            # The overlay covers exactly the preview, so image pixels land on image pixels.
            frame = page.evaluate(
                "[document.getElementById('preview'), document.getElementById('boxes')]"
                ".map(e => { const r = e.getBoundingClientRect();"
                " return [r.x, r.y, r.width, r.height]; })"
            )
            assert frame[0] == pytest.approx(frame[1], abs=0.5)

            legend = card.locator(".objects li")
            assert legend.count() == len(objects)
            for row, item in zip(legend.all(), objects, strict=True):
                assert row.locator(".name").text_content() == item["label"]
                coords = ", ".join(str(math.floor(v + 0.5)) for v in item["box"])  # JS round
                assert row.locator(".coords").text_content() == f"[{coords}]"
            assert card.locator("button.explain").count() == 0
            assert card.locator(".row[title]").count() == 0  # no click-to-explain score rows
            assert not page.locator("section > p.hint", has_text="Grad-CAM").is_visible()
            assert not page.locator("#error").is_visible()

            # The next image starts clean: the old boxes go.
            page.set_input_files(
                "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
            )
            page.wait_for_selector("#error", state="visible")
            assert page.locator("#boxes rect").count() == 0
            assert page.locator(".head").count() == 0
        finally:
            browser.close()
    assert elsewhere == []
