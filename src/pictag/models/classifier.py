"""The model pictag trains: one backbone, pooled features, and one small module per named head.

``Classifier(images) -> {head: logits}``. ``forward_heads`` runs the heads alone on pooled
features, which is what the linear probe trains on cached features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def make_head_module(
    num_features: int, num_outputs: int, drop_rate: float, hidden: int
) -> nn.Module:
    """Dropout + linear, with an optional hidden layer (linear, GELU) before it."""
    layers: list[nn.Module] = [nn.Dropout(drop_rate)] if drop_rate > 0 else []
    if hidden > 0:
        layers += [nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(drop_rate)]
        num_features = hidden
    layers.append(nn.Linear(num_features, num_outputs))
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Backbone plus a dict of named heads.

    Args:
        backbone: A headless model whose ``forward`` returns pooled features ``[B, F]`` and
            which has ``num_features``.
        head_sizes: Head name -> number of outputs (classes or tags).
        drop_rate: Dropout before each head's linear layer.
        hidden: Head name -> hidden width (0 or absent: none).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_sizes: Mapping[str, int],
        drop_rate: float = 0.0,
        hidden: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        hidden = hidden or {}
        self.heads = nn.ModuleDict(
            {
                name: make_head_module(self.num_features, size, drop_rate, hidden.get(name, 0))
                for name, size in head_sizes.items()
            }
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, F]``."""
        return self.backbone(images)

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head from pooled features."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.forward_features(images))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())
