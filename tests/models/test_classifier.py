import pytest
import torch
from torch import nn

from pictag.models.classifier import Classifier


class _Pool(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_one_logits_tensor_per_head_with_its_size():
    model = Classifier(_Pool(), {"brand": 5, "tags": 3}, drop_rate=0.1, hidden={"tags": 16})
    out = model(torch.randn(4, 3, 16, 16))
    assert set(out) == {"brand", "tags"}
    assert out["brand"].shape == (4, 5)
    assert out["tags"].shape == (4, 3)
    assert isinstance(model.heads["tags"][1], nn.Linear)  # hidden layer after dropout
    assert model.heads["tags"][1].out_features == 16


def test_heads_on_features_match_full_forward():
    model = Classifier(_Pool(), {"a": 2}).eval()
    images = torch.randn(2, 3, 16, 16)
    features = model.forward_features(images)
    assert torch.allclose(model.forward_heads(features)["a"], model(images)["a"])
    n_head = sum(p.numel() for p in model.head_parameters())
    assert n_head == 8 * 2 + 2
    assert len(model.backbone_parameters()) == 2


def test_dense_heads_read_feature_maps_beside_pooled_heads():
    """A detection head reads the last three feature maps in the same backbone pass; the
    pooled heads' outputs are those of the plain model."""
    import timm

    from pictag.heads.detection_model import DetectionModule
    from pictag.models.classifier import dense_channels

    torch.manual_seed(0)
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    channels = dense_channels(backbone)
    model = Classifier(
        backbone, {"tags": 3}, dense={"objects": DetectionModule(channels, 2)},
        order=["objects", "tags"],
    ).eval()  # fmt: skip
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        plain = model.forward_heads(backbone(images))
    assert list(out) == ["objects", "tags"]
    torch.testing.assert_close(out["tags"], plain["tags"])
    assert out["objects"].shape[:2] == (2, 8 * 8 + 4 * 4 + 2 * 2 + 1 + 1)
    assert {id(p) for p in model.dense.parameters()} <= {id(p) for p in model.head_parameters()}


def test_dense_heads_need_a_backbone_with_feature_maps():
    from pictag.models.backbone import SmallCNN
    from pictag.models.classifier import dense_channels

    with pytest.raises(ValueError, match="feature maps"):
        dense_channels(SmallCNN())
