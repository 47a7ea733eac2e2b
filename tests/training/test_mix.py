import numpy as np
import torch

from pictag.heads import MULTICLASS, MULTILABEL
from pictag.training.mix import Mixer


def _batch():
    images = torch.rand(6, 3, 8, 8)
    targets = {
        "cls": torch.tensor([0, 1, 2, -100, 1, 0]),
        "tags": torch.tensor(
            [[1, 0], [0, 1], [1, 1], [0, 0], [-1, -1], [1, 0]], dtype=torch.float32
        ),
    }
    return images, targets


def test_mixup_mixes_images_and_each_head_by_its_kind():
    mixer = Mixer({"cls": MULTICLASS, "tags": MULTILABEL}, {"cls": 3, "tags": 2}, mixup_alpha=1.0,
                  generator=np.random.default_rng(1))  # fmt: skip
    images, targets = _batch()
    mixed_images, mixed = mixer(images, targets)
    assert mixed_images.shape == images.shape
    assert not torch.equal(mixed_images, images)
    assert mixed["cls"].shape == (6, 3)  # soft one-hot
    valid = (mixed["cls"] >= 0).all(1)
    assert torch.allclose(mixed["cls"][valid].sum(1), torch.ones(int(valid.sum())))
    assert not valid[3]  # a missing class stays missing
    assert (mixed["tags"][4] < 0).all()  # a missing tag row stays missing


def test_cutmix_pastes_a_box_and_disabled_mixer_is_identity():
    mixer = Mixer(
        {"cls": MULTICLASS}, {"cls": 3}, cutmix_alpha=1.0, generator=np.random.default_rng(0)
    )
    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    targets = {"cls": torch.tensor([0, 1, 2, 0, 1, 2])}
    mixed_images, _ = mixer(images, targets)
    changed = (mixed_images != images).flatten(1).any(1)
    assert changed.any()
    off = Mixer({"cls": MULTICLASS}, {"cls": 3})
    same_images, same = off(images, targets)
    assert same_images is images and same is targets
