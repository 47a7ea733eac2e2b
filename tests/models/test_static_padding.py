"""Fixed "SAME" padding: the copy computes what the model computes, for the input size given."""

from __future__ import annotations

import torch
from timm.layers import Conv2dSame
from torch import nn

from pictag.models.static_padding import with_static_padding


def _tf_style() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        Conv2dSame(3, 4, 3, stride=2),  # odd input sizes get an asymmetric pad
        nn.ReLU(),
        nn.Sequential(Conv2dSame(4, 6, 5, stride=2, bias=False)),  # nested: replaced too
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).train()


def test_copy_matches_the_model_at_its_input_size_and_leaves_it_alone():
    model = _tf_style()
    fixed = with_static_padding(model, (3, 15, 22))
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    assert sum(isinstance(m, nn.ZeroPad2d) for m in fixed.modules()) == 2
    assert sum(isinstance(m, Conv2dSame) for m in model.modules()) == 2  # the original keeps its
    assert model.training and not fixed.training
    images = torch.randn(3, 3, 15, 22)
    with torch.no_grad():
        assert torch.allclose(fixed(images), model.eval()(images), atol=1e-6)


def test_a_model_without_dynamic_padding_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1))
    assert with_static_padding(model, (3, 16, 16)) is model


class _Twice(nn.Module):
    """One convolution called at two sizes: no single constant pad fits both calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = Conv2dSame(3, 3, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x)).mean((2, 3))


def test_a_convolution_called_at_two_sizes_keeps_its_dynamic_padding():
    model = _Twice().eval()
    fixed = with_static_padding(model, (3, 15, 15))
    assert isinstance(fixed.conv, Conv2dSame)
    images = torch.randn(2, 3, 15, 15)
    with torch.no_grad():
        assert torch.allclose(fixed(images), model(images), atol=1e-6)


def test_a_model_that_is_one_such_convolution_is_replaced_whole():
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2).eval()
    fixed = with_static_padding(conv, (3, 9, 9))
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    images = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(fixed(images), conv(images), atol=1e-6)
