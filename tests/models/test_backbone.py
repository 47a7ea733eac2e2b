"""Backbones: headless outputs, data configs, local weight files, offline errors, and the
bundled Lite0 weights classifying real photos."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_image
from torchvision.transforms import InterpolationMode, v2

from pictag.data.transforms import Preprocess
from pictag.models.backbone import OFFLINE_DEFAULT, check_backbone_name, create_backbone
from pictag.models.offline_lite0 import load_offline_lite0, map_in_order

# ImageNet-1k indices, checked against timm.data.ImageNetInfo().index_to_description.
PALACE, DAISY = 698, 985


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_timm_backbone_gives_pooled_features_and_data_config(name: str) -> None:
    model, config = create_backbone(name, pretrained=False)
    model.eval()
    with torch.no_grad():
        features = model(torch.randn(2, *config.input_size))
    assert features.shape == (2, model.num_features)
    assert config.input_size == (3, 160, 160)
    assert len(config.mean) == len(config.std) == 3
    assert all(0 < s < 1 for s in config.std)
    assert 0 < config.crop_pct <= 1
    assert json.loads(json.dumps(config.to_dict()))["interpolation"] == config.interpolation


def test_image_size_overrides_input_size_and_drop_path_reaches_model() -> None:
    model, config = create_backbone("test_resnet", image_size=96, drop_path_rate=0.1)
    assert config.input_size == (3, 96, 96)
    # timm ramps the rate linearly over depth up to drop_path_rate.
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert max(rates) == pytest.approx(0.1)
    plain, _ = create_backbone("test_resnet")
    assert not any(isinstance(m, timm.layers.DropPath) for m in plain.modules())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 96, 96)).shape == (1, model.num_features)


def test_small_cnn_on_32px_input() -> None:
    model, config = create_backbone("small_cnn")
    assert config == Preprocess((3, 32, 32), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    images = torch.randn(4, 3, 32, 32)
    assert model.forward_features(images).shape == (4, model.num_features, 4, 4)
    assert model(images).shape == (4, model.num_features) == (4, 128)
    with pytest.raises(ValueError, match="from scratch"):
        create_backbone("small_cnn", pretrained="offline")


def test_unknown_pretrained_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="none, hub, offline"):
        create_backbone("test_resnet", pretrained="imagenet")


def test_local_safetensors_round_trips(tmp_path) -> None:
    source = timm.create_model("test_resnet", num_classes=10)  # classifier is dropped on load
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    model, _ = create_backbone("test_resnet", pretrained=str(path))
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(
        model.state_dict()["bn1.running_var"], source.state_dict()["bn1.running_var"]
    )


def test_local_torch_file_nested_under_model(tmp_path) -> None:
    source = timm.create_model("test_efficientnet", num_classes=0)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    model, _ = create_backbone("test_efficientnet", pretrained=str(path))
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)


def test_mismatching_file_names_the_key(tmp_path) -> None:
    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"conv1\.0\.weight"):
        create_backbone("test_resnet", pretrained=str(path))
    del state["conv1.0.weight"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing 1 backbone keys.*conv1\.0\.weight"):
        create_backbone("test_resnet", pretrained=str(path))


def test_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        create_backbone("test_resnet", pretrained=str(path))


def test_a_cut_weights_file_names_the_path_and_what_to_do(tmp_path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut\.safetensors cannot be read as safetensors .*cut"):
        create_backbone("test_resnet", pretrained=str(path))


def test_hub_failure_says_offline_and_how_to_work_around(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ConnectionError, match="seems offline") as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert "pretrained: /path/to/weights.safetensors" in message
    assert f"pretrained: offline with {OFFLINE_DEFAULT}" in message


def test_an_unknown_backbone_is_named_with_the_nearest_names() -> None:
    with pytest.raises(
        ValueError, match=r"'efficientnet_lite00' is not a timm model.*efficientnet_lite0"
    ):
        create_backbone("efficientnet_lite00", pretrained="none")
    # Not the offline weights' message, which would blame the weights for the name.
    with pytest.raises(ValueError, match="is not a timm model"):
        create_backbone("efficientnet_lite00")
    with pytest.raises(ValueError, match="lists timm's names"):
        create_backbone("zzzz_qqqq", pretrained="none")
    check_backbone_name("resnet50.a1_in1k")  # a pretrained tag is a known model
    check_backbone_name("hf-hub:timm/resnet18.a1_in1k")  # left to the hub
    check_backbone_name("local-dir:/models/my_resnet")  # and to timm's folder loader


def test_offline_only_for_lite0() -> None:
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        create_backbone("test_resnet", pretrained="offline")


def test_map_in_order_names_first_mismatching_pair() -> None:
    source = {"_stem.weight": torch.zeros(8, 3), "_fc.weight": torch.zeros(10, 8)}
    target = {"conv_stem.weight": torch.ones(8, 3), "classifier.weight": torch.ones(5, 8)}
    with pytest.raises(ValueError, match=r"'_fc\.weight' \(10, 8\) onto 'classifier\.weight'"):
        map_in_order(source, target)
    target["classifier.weight"] = torch.ones(10, 8)
    assert list(map_in_order(source, target)) == ["conv_stem.weight", "classifier.weight"]


def _preprocess(photo: str, config: Preprocess) -> torch.Tensor:
    size = config.input_size[-1]
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(int(size / config.crop_pct), InterpolationMode(config.interpolation)),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(config.mean, config.std),
        ]
    )
    return transform(Image.fromarray(load_sample_image(photo)))


def test_offline_lite0_classifies_real_photos() -> None:
    backbone, config = create_backbone(OFFLINE_DEFAULT, pretrained="offline")
    assert config == Preprocess((3, 224, 224), (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
    full = load_offline_lite0(num_classes=1000).eval()
    images = torch.stack([_preprocess("china.jpg", config), _preprocess("flower.jpg", config)])
    with torch.no_grad():
        top5 = full(images).topk(5).indices.tolist()
        # The headless model carries the same weights as the full one up to its classifier.
        pooled = full.forward_head(full.forward_features(images), pre_logits=True)
        assert torch.allclose(backbone.eval()(images), pooled, atol=1e-5)
    assert PALACE in top5[0], top5[0]
    assert DAISY in top5[1], top5[1]


class _Payload:
    """Stands for the code a malicious pickle would run; never unpickled by pictag."""

    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run() -> None:
        _Payload.ran = True


def test_a_pickle_that_holds_code_is_refused_with_how_to_convert(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.0.weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(ValueError) as caught:
        create_backbone("test_resnet", pretrained=str(path))
    message = str(caught.value)
    assert str(path) in message and "safetensors" in message and "weights_only=False" in message
    assert not _Payload.ran
