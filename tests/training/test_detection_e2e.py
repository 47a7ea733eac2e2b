"""A detection head end to end on the CPU: Pascal VOC boxes -> train -> evaluate -> predict
(JSON boxes in the file's pixels) -> ONNX, whose boxes a consumer with only onnxruntime, numpy
and PIL reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.cli import main

SIZE = 64
ARGS = [
    "--set", "heads.objects.kind=detection",
    "--set", "model.backbone=test_efficientnet",
    "--set", "model.pretrained=none",
    "--set", f"model.image_size={SIZE}",
    "--set", "train.epochs=2",
    "--set", "train.mode=probe-then-fine-tune",
    "--set", "train.batch_size=8",
    "--set", "train.lr=0.003",
    "--set", "train.budget=off",
    "--set", "data.val_fraction=0.25",
]  # fmt: skip


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory: pytest.TempPathFactory, make_voc) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("detection")
    voc = make_voc(tmp / "voc", 32)
    run = tmp / "run"
    assert main(["train", "--images", str(voc), "--out", str(run), *ARGS]) == 0
    return voc, run


def test_train_and_evaluate_speak_boxes(detection_run, capsys):
    _, run = detection_run
    meta = json.loads((run / "pictag.json").read_text())
    assert meta["heads"][0]["kind"] == "detection"
    assert meta["preprocess"]["whole"] is True
    params = meta["decisions"]["objects"]
    assert len(params["thresholds"]) == 2 and params["nms_iou"] == 0.6
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Epoch 0 is the dense probe (heads on the frozen backbone's cached maps), then fine-tuning.
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert {"val/objects/map", "val/objects/map50"} <= set(history[-1])
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "map50" in out and "AP50" in out and "red" in out and "blue" in out
    report = json.loads((run / "report.json").read_text())
    section = report["heads"]["objects"]
    assert section["kind"] == "detection" and section["n_boxes"] > 0
    # Colour rectangles on a flat background: the probe on even a random backbone's maps and
    # two epochs find most of them.
    assert section["metrics"]["map50"] > 0.3
    # The worst images carry their true and decided boxes, drawn over their thumbnails.
    mistakes = report["mistakes"]
    assert mistakes and all(set(m["boxes"]["objects"]) == {"true", "pred"} for m in mistakes)
    html = (run / "report.html").read_text()
    assert html.count('<svg viewBox="0 0 1 1"') == len(mistakes) and "<rect" in html


def test_one_voc_folder_feeds_a_tags_head_and_a_detection_head(tmp_path, make_voc):
    """Multi-task: the classes on the image as tags, and their boxes, from the same XML files;
    the model trains both with the summed loss."""
    voc = make_voc(tmp_path / "voc", 24, seed=1)
    run = tmp_path / "run"
    args = [*ARGS, "--set", "heads.tags.kind=multilabel", "--set", "train.mode=linear-probe"]
    assert main(["train", "--images", str(voc), "--out", str(run), *args]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and {"val/tags/mAP", "val/objects/map"} <= set(history[0])
    meta = json.loads((run / "pictag.json").read_text())
    assert [(h["name"], h["kind"]) for h in meta["heads"]] == [
        ("objects", "detection"),
        ("tags", "multilabel"),
    ]
    from pictag.evaluation.predictor import Predictor

    prediction = Predictor.from_run(run, "cpu").predict(voc / "JPEGImages" / "000.png")[0]
    assert prediction.heads["tags"].objects is None
    assert isinstance(prediction.heads["objects"].objects, list)


def test_predict_json_gives_boxes_in_the_files_pixels(detection_run, capsys):
    voc, run = detection_run
    image = voc / "JPEGImages" / "000.png"
    assert main(["predict", str(run), str(image), "--format", "json"]) == 0
    head = json.loads(capsys.readouterr().out)[0]["heads"]["objects"]
    assert head["kind"] == "detection"
    for item in head["objects"]:
        x1, y1, x2, y2 = item["box"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 72  # the file's 96x72, not 64x64
        assert item["label"] in ("red", "blue") and 0 <= item["score"] <= 1


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS as a consumer without torchvision writes it."""
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        best, order = order[0], order[1:]
        keep.append(best)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        overlap = inter / (area[best] + area[rest] - inter)
        order = [int(r) for r, v in zip(rest, overlap, strict=True) if v <= iou]
    return keep


def _consume(onnx_path: Path, image_path: Path) -> list[dict]:
    """Boxes from model.onnx with onnxruntime, numpy and PIL only, as its metadata says."""
    import onnx
    import onnxruntime

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    meta = json.loads(props["pictag"])
    pre, head = meta["preprocess"], meta["heads"][0]
    picture = Image.open(image_path).convert("RGB")
    width, height = picture.size
    h, w = pre["resize_to"]
    resized = picture.resize((w, h), Image.Resampling.BICUBIC)
    array = (np.asarray(resized, np.float32) / 255 - pre["mean"]) / pre["std"]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {meta["input"]["name"]: array.transpose(2, 0, 1)[None].astype(np.float32)}
    (dense,) = session.run([head["output"]], feed)
    boxes, scores = dense[0][:, :4], dense[0][:, 4:]
    kept = []
    for label, threshold in enumerate(head["thresholds"]):
        rows = np.flatnonzero(scores[:, label] >= threshold)
        for i in _nms(boxes[rows], scores[rows, label], head["nms_iou"]):
            kept.append((float(scores[rows[i], label]), label, boxes[rows[i]]))
    kept = sorted(kept, key=lambda k: -k[0])[: head["max_boxes"]]
    scale = np.array([width, height, width, height])
    return [{"label": head["labels"][c], "score": s, "box": b * scale} for s, c, b in kept]


def test_an_onnx_consumer_gets_the_boxes_pictag_predicts(detection_run, capsys):
    from pictag.evaluation.predictor import Predictor

    voc, run = detection_run
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    predictor = Predictor.from_run(run, "cpu", backend="torch")
    thresholds = dict(
        zip(
            predictor.heads["objects"].labels,
            predictor.params["objects"]["thresholds"],
            strict=True,
        )
    )

    def clear(found: list[dict]) -> list[dict]:
        # PIL's bicubic resize differs from torchvision's by a few grey levels, which moves
        # scores by up to ~0.01: a box that close to its threshold may fall either way.
        return [o for o in found if o["score"] >= thresholds[o["label"]] + 0.03]

    compared = 0
    for index in range(8):
        image = voc / "JPEGImages" / f"{index:03d}.png"
        ours = clear(predictor.predict(image)[0].heads["objects"].objects)
        theirs = clear(_consume(run / "model.onnx", image))
        compared += len(ours)
        assert [o["label"] for o in ours] == [t["label"] for t in theirs]
        for mine, other in zip(ours, theirs, strict=True):
            assert mine["score"] == pytest.approx(other["score"], abs=0.03)
            np.testing.assert_allclose(mine["box"], other["box"], atol=2.0)
    assert compared >= 4
    # pictag's own runtimes on the exported file decide the same boxes as eager PyTorch.
    image = voc / "JPEGImages" / "000.png"
    eager = predictor.predict(image)[0].heads["objects"].objects
    for backend in ("onnxruntime", "openvino"):
        exported = Predictor.from_run(run, "cpu", backend=backend).predict(image)[0]
        found = exported.heads["objects"].objects
        assert [o["label"] for o in found] == [o["label"] for o in eager], backend
        for mine, other in zip(found, eager, strict=True):
            np.testing.assert_allclose(mine["box"], other["box"], atol=0.5)
