"""Checks of labels once the split is made: a label no training image has."""

from __future__ import annotations

from pathlib import Path

from pictag.data.label_checks import untrained_labels
from pictag.data.schema import Head, Sample
from pictag.heads.masks import MaskLabel


def test_a_class_only_val_has_is_named_with_its_head():
    head = Head("animal", "multiclass", ("cat", "dog", "fox"))
    train = [Sample(Path(f"{i}.jpg"), {"animal": label}) for i, label in enumerate(["cat", "dog"])]
    messages = untrained_labels(train, {"animal": head})
    assert len(messages) == 1
    assert "head 'animal': no training image has 'fox'" in messages[0]
    assert "heads.animal.labels" in messages[0]


def test_a_segmentation_class_no_training_mask_holds_is_named():
    head = Head("seg", "segmentation", ("background", "pet", "person"))
    mask = MaskLabel((4, 4), Path("m.png"), ((0, 0, "background"), (1, 1, "pet")),
                     classes=("background", "pet"))  # fmt: skip
    train = [Sample(Path("a.png"), {"seg": mask}), Sample(Path("b.png"), {"seg": None})]
    messages = untrained_labels(train, {"seg": head})
    assert len(messages) == 1 and "'person'" in messages[0]
    assert (
        untrained_labels(train, {"seg": Head("seg", "segmentation", ("background", "pet"))}) == []
    )
