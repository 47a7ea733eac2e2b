"""The detection head kind: targets, loss, decoding, decisions and per-image predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from pictag.heads import DETECTION, LabelError, LossOptions, Objects, resolve_head
from pictag.heads.boxes import MAX_OBJECTS, MISSING, PAD
from pictag.heads.detection_decide import decide, judge, predict_entry
from pictag.heads.detection_model import (
    DetectionLoss,
    DetectionModule,
    decode,
    detections,
    level_sizes,
)


def _objects(*boxes: tuple[str, float, float, float, float], size=(200, 100)) -> Objects:
    return Objects(size, tuple(boxes))


def test_encode_normalises_boxes_and_marks_padding_and_missing():
    cat = _objects(("cat", 20, 10, 120, 60), ("dog", 0, 0, 200, 100))
    head = resolve_head("objects", "detection", [cat, None], rename={"dog": "puppy"})
    assert head.labels == ("cat", "puppy")
    target = head.target(cat)
    assert target.shape == (MAX_OBJECTS, 5)
    np.testing.assert_allclose(target[0], [0, 0.1, 0.1, 0.6, 0.6])
    np.testing.assert_allclose(target[1], [1, 0, 0, 1, 1])
    assert (target[2:, 0] == PAD).all()
    assert (head.target(None)[:, 0] == MISSING).all()
    with pytest.raises(LabelError, match="bird"):
        head.target(_objects(("bird", 1, 1, 5, 5)))


def test_counts_and_known_images():
    head = resolve_head("objects", "detection", [_objects(("a", 0, 0, 5, 5))], labels=["a", "b"])
    targets = np.stack(
        [
            head.target(_objects(("a", 0, 0, 5, 5), ("b", 5, 5, 9, 9), ("b", 1, 1, 3, 3))),
            head.target(_objects()),
            head.target(None),
        ]
    )
    assert DETECTION.count_labels(targets, 2).tolist() == [1, 2]
    assert DETECTION.count_known(targets) == 2


def _candidates(rows: list[tuple[float, ...]], classes: int = 2) -> np.ndarray:
    """Dense outputs ``[A, 4 + C]`` with one anchor per ``(x1, y1, x2, y2, score, class)``."""
    out = np.zeros((len(rows), 4 + classes), dtype=np.float32)
    for anchor, (*box, score, label) in enumerate(rows):
        out[anchor, :4] = box
        out[anchor, 4 + int(label)] = score
    return out


def test_decide_suppresses_overlaps_per_class_and_applies_thresholds():
    probs = _candidates(
        [
            (0.1, 0.1, 0.5, 0.5, 0.9, 0),
            (0.11, 0.1, 0.5, 0.5, 0.8, 0),  # same object, same class: NMS drops it
            (0.11, 0.1, 0.5, 0.5, 0.7, 1),  # same place, other class: kept
            (0.6, 0.6, 0.9, 0.9, 0.3, 0),  # below class 0's threshold
        ]
    )[None]
    params = {"thresholds": [0.5, 0.5], "nms_iou": 0.6, "max_boxes": 100}
    kept = decide(probs, params)[0]
    assert sorted(kept[kept[:, 5] >= 0, 4].tolist()) == pytest.approx([0.7, 0.9])
    params["thresholds"] = [0.2, 0.9]
    kept = decide(probs, params)[0]
    assert sorted(kept[kept[:, 5] >= 0, 4].tolist()) == pytest.approx([0.3, 0.9])
    params["max_boxes"] = 1
    kept = decide(probs, params)[0]
    assert kept[kept[:, 5] >= 0, 4].tolist() == pytest.approx([0.9])


def test_judge_and_predict_entry_in_original_pixels():
    head = resolve_head("objects", "detection", [_objects(("cat", 0, 0, 5, 5))])
    truth = head.target(_objects(("cat", 20, 10, 120, 60)))
    probs = _candidates([(0.1, 0.1, 0.6, 0.6, 0.9, 0)], classes=1)[None]
    params = DETECTION.default_params(head, None)
    known, right = judge(decide(probs, params), truth[None])
    assert known.tolist() == [True] and right.tolist() == [True]
    shifted = _candidates([(0.5, 0.5, 0.9, 0.9, 0.9, 0)], classes=1)[None]
    assert judge(decide(shifted, params), truth[None])[1].tolist() == [False]
    entry = predict_entry(head, probs[0], params, (200, 100))
    assert entry["labels"] == ["cat"]
    assert entry["objects"] == [
        {"label": "cat", "score": pytest.approx(0.9), "box": [20, 10, 120, 60]}
    ]


def test_module_loss_learns_and_decode_is_fixed_size():
    torch.manual_seed(0)
    maps = [torch.randn(2, c, s, s) for c, s in ((8, 8), (16, 4), (24, 2))]
    module = DetectionModule([8, 16, 24], num_classes=2)
    outputs = module(maps, (64, 64))
    anchors = outputs[0, :, :4]
    assert outputs.shape == (2, 64 + 16 + 4 + 1 + 1, 9 + 2)
    assert level_sizes(anchors) == [64, 16, 4, 1, 1]
    targets = torch.full((2, MAX_OBJECTS, 5), PAD)
    targets[0, 0] = torch.tensor([1, 0.2, 0.2, 0.6, 0.7])
    targets[1, :, 0] = MISSING  # left out of the loss
    loss_fn = DetectionLoss(2)
    optimizer = torch.optim.Adam(module.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = loss_fn(module(maps, (64, 64)), targets)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
    dense = decode(module(maps, (64, 64)).detach())
    assert dense.shape == (2, 86, 4 + 2)
    best = detections(dense[0], 0.6, 10)[0]
    assert int(best[5]) == 1 and float(best[4]) > 0.5
    torch.testing.assert_close(best[:4], torch.tensor([0.2, 0.2, 0.6, 0.7]), atol=0.1, rtol=0)


def test_missing_boxes_give_a_zero_loss_that_keeps_the_graph():
    maps = [torch.randn(1, c, s, s) for c, s in ((8, 8), (16, 4), (24, 2))]
    module = DetectionModule([8, 16, 24], num_classes=1)
    outputs = module(maps, (64, 64))
    loss = DetectionLoss(1)(outputs, torch.full((1, MAX_OBJECTS, 5), MISSING))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_boxes_move_with_a_flip_and_a_resize():
    target = torch.full((MAX_OBJECTS, 5), PAD)
    target[0] = torch.tensor([0, 0.1, 0.2, 0.3, 0.6])
    places = DETECTION.wrap_target(target, (50, 100))
    image = torch.zeros(3, 50, 100, dtype=torch.uint8)
    flip = v2.Compose([v2.RandomHorizontalFlip(1.0), v2.Resize((32, 32))])
    from torchvision import tv_tensors

    moved, places = flip(tv_tensors.Image(image), places)
    out = DETECTION.unwrap_target(places, tuple(moved.shape[-2:]))
    np.testing.assert_allclose(out[0].numpy(), [0, 0.7, 0.2, 0.9, 0.6], atol=1e-5)
    assert (out[1:, 0] == PAD).all()


def test_detection_rejects_mixup_and_cells():
    with pytest.raises(ValueError, match="mixup"):
        DETECTION.mix_targets(torch.zeros(1), torch.zeros(1), 0.5, 1)
    with pytest.raises(LabelError, match="boxcsv"):
        DETECTION.parse("cat", None)
    with pytest.raises(ValueError, match="detection"):
        DETECTION.make_loss(LossOptions(name="focal"), np.ones(2))


def test_objects_read_well_in_messages():
    assert str(_objects(("cat", 10, 20, 110, 90.5))) == "1 box: cat [10, 20, 110, 90.5]"
    assert str(_objects()) == "no boxes"
    many = _objects(*[("a", i, i, i + 1, i + 1) for i in range(6)])
    assert str(many).startswith("6 boxes: a [0, 0, 1, 1]") and str(many).endswith("(2 more)")
