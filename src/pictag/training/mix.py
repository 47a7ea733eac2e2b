"""MixUp and CutMix on whole batches; each head's kind mixes its own targets (one-hot classes or
multi-hot tags), and a target missing on either side stays missing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pictag.heads import HeadKind


@dataclass
class Mixer:
    """Mix a batch with a shuffled copy of itself.

    Attributes:
        kinds: Head name -> kind (decides how targets mix).
        sizes: Head name -> number of classes/tags.
        mixup_alpha: Beta(alpha, alpha) for MixUp; 0 disables.
        cutmix_alpha: Beta(alpha, alpha) for CutMix; 0 disables. With both on, each batch
            picks one at random.
        generator: Seeded generator, so a deterministic run mixes the same way after a resume.
    """

    kinds: dict[str, HeadKind]
    sizes: dict[str, int]
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    generator: np.random.Generator | None = None

    def __post_init__(self) -> None:
        self.generator = self.generator or np.random.default_rng(0)

    def __call__(
        self, images: torch.Tensor, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = self.generator
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        if alpha <= 0:
            return images, targets
        lam = float(rng.beta(alpha, alpha))
        perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
        if use_cutmix:
            images, lam = _cutmix(images, perm, lam, rng)
        else:
            images = images * lam + images[perm] * (1 - lam)
        mixed = {
            name: self.kinds[name].mix_targets(t, t[perm], lam, self.sizes[name])
            for name, t in targets.items()
        }
        return images, mixed


def _cutmix(
    images: torch.Tensor, perm: torch.Tensor, lam: float, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Paste a box of the shuffled batch; return the images and the area share actually kept."""
    height, width = images.shape[-2:]
    cut = np.sqrt(1 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    x0, x1 = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    images = images.clone()
    images[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    return images, 1 - (y1 - y0) * (x1 - x0) / (height * width)
