"""TensorFlow-style "SAME" padding fixed for one input size, so an exporter sees constants.

timm's ``tf_*`` models (the offline default ``tf_efficientnet_lite0`` among them) pad each
strided convolution asymmetrically, by an amount computed from the input's height and width on
every call (``timm.layers.Conv2dSame``). The TorchScript exporter records that arithmetic as
shape operations and separate ``Pad`` nodes, and ONNX Runtime ran the resulting Lite0 graph at
~65 img/s against ~100 for a graph with the padding as constants. For a fixed input size the
amounts are fixed, so :func:`with_static_padding` gives a copy of the model with each such
convolution replaced by a constant ``ZeroPad2d`` and a plain ``Conv2d`` (the same weights);
exported by TorchScript in ~1 s, it runs as fast as ``torch.export``'s graph, which takes ~19 s
to make (Lite0, 2 cores).
"""

from __future__ import annotations

import copy

import torch
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same_arg
from torch import nn


def with_static_padding(module: nn.Module, input_size: tuple[int, ...]) -> nn.Module:
    """``module`` itself when it has no dynamic "SAME" padding, else a copy in eval mode in
    which each ``Conv2dSame`` pads by the constant amount that inputs of ``input_size`` get
    (one called at several sizes within a forward pass keeps its dynamic padding).

    Args:
        module: A model taking ``[B, *input_size]`` images; left unchanged.
        input_size: ``(3, H, W)`` of the images the copy will be given (other sizes are not
            padded like the original).
    """
    if not any(isinstance(m, Conv2dSame) for m in module.modules()):
        return module
    fixed = copy.deepcopy(module).eval()
    sizes: dict[nn.Module, set[tuple[int, int]]] = {}

    def note_size(conv: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes.setdefault(conv, set()).add(tuple(args[0].shape[-2:]))  # None: the input stays

    hooks = [
        m.register_forward_pre_hook(note_size) for m in fixed.modules() if isinstance(m, Conv2dSame)
    ]
    try:
        with torch.no_grad():  # one pass to learn each convolution's input size
            fixed(torch.zeros(1, *input_size))
    finally:
        for hook in hooks:
            hook.remove()
    for name, conv in list(fixed.named_modules()):
        if len(sizes.get(conv, ())) != 1:
            continue  # not a Conv2dSame, or one called at several sizes: it stays dynamic
        padded = _padded_conv(conv, next(iter(sizes[conv])))
        if not name:
            return padded  # the model is itself one such convolution
        parent, _, child = name.rpartition(".")
        setattr(fixed.get_submodule(parent), child, padded)
    return fixed


def _padded_conv(conv: Conv2dSame, size: tuple[int, int]) -> nn.Sequential:
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        0,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    plain.weight, plain.bias = conv.weight, conv.bias
    pad = pad_same_arg(list(size), list(conv.kernel_size), conv.stride, conv.dilation)
    return nn.Sequential(nn.ZeroPad2d(pad), plain)
