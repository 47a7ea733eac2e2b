"""The model pictag trains: one backbone, pooled features, and one small module per named head.

``Classifier(images) -> {head: logits}``. ``forward_heads`` runs the pooled-feature heads alone
on pooled features, which is what the linear probe trains on cached features. Heads whose kind
locates things (detection, segmentation) are ``dense``: they read the backbone's last feature
maps (from timm's ``forward_intermediates``) in the same backbone pass, each as many as its
``levels`` says (detection the last three, strides 8-32; segmentation four, from stride 4).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

MAX_DENSE_LEVELS = 4  # feature maps a dense head may read: the backbone's last four (4-32)
DEFAULT_LEVELS = 3  # a dense module without a `levels` attribute reads the last three


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
        dense: Head name -> module mapping ``(feature maps, (H, W))`` to the head's outputs;
            these heads are not in ``head_sizes``.
        order: Head names in output order; default: ``head_sizes`` then ``dense``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_sizes: Mapping[str, int],
        drop_rate: float = 0.0,
        hidden: Mapping[str, int] | None = None,
        dense: Mapping[str, nn.Module] | None = None,
        order: list[str] | None = None,
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
        self.dense = nn.ModuleDict(dict(dense or {}))
        self.order = list(order or [*head_sizes, *self.dense])
        # The backbone computes the maps the hungriest dense head reads, once for all of them.
        self.dense_levels = max((module_levels(m) for m in self.dense.values()), default=0)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, F]``."""
        return self.backbone(images)

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head from pooled features."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.dense:
            return self.forward_heads(self.forward_features(images))
        final, maps = self.backbone.forward_intermediates(images, indices=self.dense_levels)
        pooled = self.backbone.forward_head(final, pre_logits=True)
        return self.forward_all_heads(pooled, maps, (int(images.shape[-2]), int(images.shape[-1])))

    def forward_all_heads(
        self, pooled: torch.Tensor, maps: list[torch.Tensor], size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Every head's outputs from pooled features and the feature maps of images of
        ``size`` ``(H, W)``, in head order (what the dense probe trains on cached values)."""
        out = self.forward_heads(pooled)
        for name, module in self.dense.items():
            out[name] = module(maps[len(maps) - module_levels(module) :], size)
        return {name: out[name] for name in self.order}

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.heads.parameters(), *self.dense.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def dense_channels(backbone: nn.Module) -> list[int]:
    """Channels of the last ``MAX_DENSE_LEVELS`` feature maps, finest first; a dense head
    module takes the last ``levels`` of them.

    Raises:
        ValueError: the backbone gives no feature maps (not a timm model with
            ``forward_intermediates``).
    """
    info = getattr(backbone, "feature_info", None)
    if not hasattr(backbone, "forward_intermediates") or not info:
        raise ValueError(
            f"model.backbone {type(backbone).__name__} gives no feature maps, which detection "
            "heads read: choose a timm backbone such as tf_efficientnet_lite0 or resnet18"
        )
    return [int(level["num_chs"]) for level in list(info)[-MAX_DENSE_LEVELS:]]


def module_levels(module: nn.Module) -> int:
    """How many of the backbone's last feature maps a dense head module reads."""
    return int(getattr(module, "levels", DEFAULT_LEVELS))
