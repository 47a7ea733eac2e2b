"""A segmentation head on the server and its web page: ``/predict`` gives the class of each
pixel of the uploaded image as a palette PNG of its own size, the page draws that mask
half-transparent exactly over the picture (class 0 left clear) with a legend of the classes'
shares in the head's card, and Grad-CAM (``/explain`` and the page's explain controls) is refused
for such a head.

The browser test needs Playwright for Python and Debian's Chromium, as test_page_boxes.py does.
With ``PICTAG_SCREENSHOTS=1`` it also writes the page as docs/serve-segmentation.png.
"""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictag.cli import main
from pictag.heads.segmentation_draw import ALPHA, colour, decode_png
from pictag.serving.app import app_from_run
from pictag.serving.schemas import PredictResponse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "serve-segmentation.png"
UPLOAD_SIZE = (384, 288)  # 4x the training images: shown scaled down in the page's column


def coco_from_voc(voc: Path) -> Path:
    """COCO instances.json of a :func:`make_voc` folder: each box as a 4-corner polygon."""
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for i, xml in enumerate(sorted((voc / "Annotations").glob("*.xml"))):
        root = ET.parse(xml).getroot()
        images.append({"id": i, "file_name": root.findtext("filename"), "width": 96, "height": 72})
        for item in root.iter("object"):
            x1, y1, x2, y2 = (
                int(item.findtext(f"bndbox/{key}") or 0) for key in ("xmin", "ymin", "xmax", "ymax")
            )
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": ids[item.findtext("name") or ""],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
                }
            )
    path = voc / "instances.json"
    coco = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory: pytest.TempPathFactory, make_voc) -> tuple[Path, Path]:
    """(images folder, run folder) of a segmentation head ``mask`` (background, blue, red)
    trained for a few seconds on COCO polygons of coloured rectangles."""
    tmp = tmp_path_factory.mktemp("page-masks")
    voc = make_voc(tmp / "voc", 24)
    labels = coco_from_voc(voc)
    run = tmp / "run"
    args = ["train", "--images", str(voc / "JPEGImages"), "--out", str(run)]
    for setting in (
        f"data.labels={labels}",
        "heads.mask.kind=segmentation",
        "data.all_heads=false",  # only the mask head, not also the source's `objects` tags
        "model.backbone=test_efficientnet",
        "model.pretrained=none",
        "model.image_size=64",
        "train.epochs=6",
        "train.batch_size=8",
        "train.lr=0.003",
        "train.budget=off",
    ):
        args += ["--set", setting]
    assert main(args) == 0
    return voc / "JPEGImages", run


@pytest.fixture(scope="module")
def client(segmentation_run) -> TestClient:
    return TestClient(app_from_run(segmentation_run[1], device="cpu"))


def upscaled(image: Path, size: tuple[int, int] = UPLOAD_SIZE) -> bytes:
    buffer = io.BytesIO()
    Image.open(image).resize(size).save(buffer, format="PNG")
    return buffer.getvalue()


def predict(client: TestClient, data: bytes) -> dict:
    response = client.post("/predict", files={"files": ("image.png", data, "image/png")})
    assert response.status_code == 200, response.text
    PredictResponse.model_validate(response.json())  # the documented schema holds the mask
    return response.json()["predictions"][0]["heads"]["mask"]


def most_found(client: TestClient, images: Path) -> tuple[Path, dict]:
    """The training image whose upscaled copy gets the most non-background pixels, and its
    prediction."""
    found = [(p, predict(client, upscaled(p))) for p in sorted(images.glob("*.png"))[:8]]
    return max(found, key=lambda item: int((decode_png(item[1]["mask"]["png"]) > 0).sum()))


def test_predict_gives_a_mask_of_the_uploaded_images_size(segmentation_run, client):
    images, _ = segmentation_run
    for image, size in zip(
        sorted(images.glob("*.png"))[:3], [(96, 72), (151, 97), (40, 90)], strict=True
    ):
        head = predict(client, upscaled(image, size))
        assert head["kind"] == "segmentation"
        assert head["mask"]["classes"] == ["background", "blue", "red"]
        classes = decode_png(head["mask"]["png"])
        assert classes.shape == (size[1], size[0])  # the uploaded image's own pixels
        assert classes.max() < len(head["mask"]["classes"])
        assert sum(head["scores"].values()) == pytest.approx(1, abs=1e-4)
        counts = Counter(classes.ravel().tolist())
        shares = {head["mask"]["classes"][k]: n / classes.size for k, n in counts.items()}
        assert head["scores"] == pytest.approx(shares, abs=1e-5)
        assert list(head["scores"].values()) == sorted(head["scores"].values(), reverse=True)
        assert set(head["labels"]) <= set(head["scores"])
    _, best = most_found(client, images)
    assert set(best["scores"]) - {"background"}, "the model finds no rectangle at all"


def test_explain_endpoint_refuses_a_segmentation_head_with_a_422(segmentation_run, client):
    image = next(segmentation_run[0].glob("*.png"))
    response = client.post(
        "/explain",
        files={"file": (image.name, image.read_bytes(), "image/png")},
        data={"head": "mask"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "cannot_explain"
    assert "segmentation" in response.json()["detail"]


@pytest.fixture(scope="module")
def server_url(segmentation_run, live_server) -> Iterator[str]:
    with live_server(segmentation_run[1]) as url:
        yield url


# The overlay's and the preview's boxes on the page, and the overlay canvas's pixels: a string
# of 0/1 (drawn or clear) per pixel and a count of each drawn RGBA colour.
GEOMETRY = """() => ['preview', 'boxes'].map(id => document.getElementById(id))
  .concat([document.querySelector('canvas.mask')])
  .map(e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"""
PIXELS = """() => {
  const canvas = document.querySelector('canvas.mask');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const drawn = [], colours = {};
  for (let at = 0; at < data.length; at += 4) {
    drawn.push(data[at + 3] > 0 ? 1 : 0);
    if (data[at + 3] > 0) {
      const key = [data[at], data[at + 1], data[at + 2], data[at + 3]].join(',');
      colours[key] = (colours[key] || 0) + 1;
    }
  }
  return {width: canvas.width, height: canvas.height, drawn: drawn.join(''), colours};
}"""


def colour_counts(colours: dict[str, int], num_classes: int) -> Counter:
    """Class -> pixels drawn in its colour, from the canvas's ``"r,g,b,a": count``; a canvas
    keeps half-transparent pixels premultiplied, so a channel may read back one or two off."""
    counts: Counter = Counter()
    for key, n in colours.items():
        r, g, b, a = map(int, key.split(","))
        assert a == ALPHA, key
        near = [
            k
            for k in range(1, num_classes)
            if max(map(abs, np.subtract((r, g, b), colour(k)))) <= 2
        ]
        assert len(near) == 1, key
        counts[near[0]] += n
    return counts


def check_geometry(page) -> None:
    preview, svg, canvas = page.evaluate(GEOMETRY)
    assert preview[2] > 100 and preview[3] > 50  # the picture is shown
    assert canvas == pytest.approx(preview, abs=1.5), (canvas, preview)  # exactly over it
    assert svg == pytest.approx(preview, abs=1.5)


def test_the_page_draws_the_mask_over_the_image(
    segmentation_run, client, server_url, only_this_server, tmp_path, wait_until
):
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM} (Debian: apt install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
        pytest.skip(message)
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed"
    )
    image, expected = most_found(client, segmentation_run[0])
    upload = tmp_path / f"shapes-{image.stem}.png"
    upload.write_bytes(upscaled(image))
    classes = decode_png(expected["mask"]["png"])
    names = expected["mask"]["classes"]
    elsewhere: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", lambda route: only_this_server(route, server_url, elsewhere))
            page.goto(server_url)
            wait_until(page, "document.getElementById('model').textContent.includes('run')")
            page.set_input_files("#file", str(upload))
            card = page.locator(".head[data-head='mask']")
            card.wait_for()
            page.wait_for_selector("canvas.mask[data-head='mask']", state="attached")
            assert page.locator("canvas.mask").count() == 1

            # The overlay covers exactly the preview, shown smaller than its 384x288 pixels,
            # and still after the page narrows and the preview shrinks.
            check_geometry(page)
            page.set_viewport_size({"width": 320, "height": 700})
            wait_until(page, "document.getElementById('preview').clientWidth < 250")
            check_geometry(page)
            page.set_viewport_size({"width": 1200, "height": 700})

            # Its pixels are the mask's: clear on the background, each class in its colour.
            pixels = page.evaluate(PIXELS)
            assert (pixels["width"], pixels["height"]) == UPLOAD_SIZE
            drawn = np.frombuffer(pixels["drawn"].encode(), np.uint8) - ord("0")
            assert drawn.sum() > 0
            assert np.array_equal(drawn.reshape(classes.shape), classes > 0)
            want = Counter(classes[classes > 0].tolist())
            assert colour_counts(pixels["colours"], len(names)) == want

            # The legend: one row per class on the mask, largest first, with its share.
            rows = card.locator(".classes li").all()
            assert [row.get_attribute("data-label") for row in rows] == list(expected["scores"])
            for row, (label, share) in zip(rows, expected["scores"].items(), strict=True):
                assert row.locator(".name").text_content() == label
                text = row.locator(".score").text_content() or ""
                assert text.endswith("%") and float(text[:-1]) == pytest.approx(
                    100 * share, abs=0.051
                )
                swatch = row.locator(".swatch")
                if label == "background":
                    assert "clear" in (swatch.get_attribute("class") or "")
                else:
                    r, g, b = colour(names.index(label))
                    background = swatch.evaluate("e => getComputedStyle(e).backgroundColor")
                    assert background == f"rgb({r}, {g}, {b})"
            assert card.locator("button.explain").count() == 0
            assert card.locator(".row[title]").count() == 0  # no click-to-explain score rows
            assert not page.locator("section > p.hint", has_text="Grad-CAM").is_visible()
            assert not page.locator("#error").is_visible()
            if os.environ.get("PICTAG_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT))

            # The next image starts clean: the old mask goes.
            page.set_input_files(
                "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
            )
            page.wait_for_selector("#error", state="visible")
            assert page.locator("canvas.mask").count() == 0
            assert page.locator(".head").count() == 0
        finally:
            browser.close()
    assert elsewhere == []
