"""pictag's configuration: one YAML file with ``data``, ``heads``, ``model`` and ``train`` sections.

Every section is a dataclass with a comment per field. Unknown keys and wrong types are errors
that name the key (``train.lr``), so a typo never silently falls back to a default. ``--set
key=value`` on the command line overrides any field, the value parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass
class HeadConfig:
    """One named output of the model."""

    kind: str = (
        "multiclass"  # 'multiclass' (exactly one class) or 'multilabel' (any number of tags)
    )
    column: str | None = None  # CSV column with the class name or tag list; default: the head name
    columns: list[str] | None = None  # CSV group of 0/1 columns, one per tag (multilabel heads)
    separator: str | None = None  # tag separator in `column`; None: detect '|', ';', ',' or spaces
    group: str | None = None  # named group of data.pattern holding this label; default: head name
    labels: list[str] | None = None  # explicit label list (order kept); other labels are errors
    rename: dict[str, str] = field(default_factory=dict)  # raw label -> label name
    bins: list[float] | None = None  # numeric edges: year [2010] -> '<=2009', '>=2010'
    min_count: int = 0  # multiclass classes with fewer images are folded into `other_label`
    other_label: str = "other"  # the class that collects folded rare classes
    weight: float = 1.0  # weight of this head's loss in the summed objective
    # multiclass: default (cross-entropy) | focal; multilabel: default (BCE) | focal | asl
    loss: str = "default"
    label_smoothing: float = 0.0  # multiclass cross-entropy only
    balance: bool = False  # class weights (multiclass) or pos_weight (multilabel) from label counts
    hidden: int = 0  # width of an optional hidden layer before this head's linear layer
    threshold_by: str = "f1"  # multilabel thresholds tuned on val: f1 | precision | recall | fixed
    threshold_target: float = 0.5  # the precision/recall to reach, or the fixed threshold


@dataclass
class DataConfig:
    """Where the images and labels are, and how to split and check them."""

    format: str = "auto"  # auto | folder | csv | voc | coco | filename | builtin
    images: list[str] = field(
        default_factory=list
    )  # image root(s); CSV ids resolve in each in turn
    labels: str | None = None  # CSV/TSV label file, or COCO instances JSON
    image_column: str | None = None  # CSV column with the image path or id; default: first column
    pattern: str | None = None  # file-name regex with one named group per head (format filename)
    keep_difficult: bool = False  # Pascal VOC: keep objects marked difficult
    builtin: str = "multioutput"  # built-in demo task: digits | multilabel | multioutput
    split_column: str | None = None  # CSV column with train/val/test per row
    split_file: str | None = None  # CSV of image,split written by an earlier run or by hand
    val_fraction: float = 0.15  # share of unsplit images held out for validation
    test_fraction: float = 0.0  # share of unsplit images held out for testing
    seed: int = 0  # seed of the automatic split
    policy: str = "strict"  # strict: stop on problems; skip: drop bad rows and list them in a file
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused (decompression bombs)
    min_per_label: int = 2  # labels with fewer images cannot be stratified and are reported


@dataclass
class ModelConfig:
    """The backbone and how the heads sit on it."""

    backbone: str = "tf_efficientnet_lite0"  # any timm model name, or 'small_cnn'
    pretrained: str = "offline"  # offline (bundled Lite0) | hub | none | path to .safetensors/.pth
    image_size: int | None = None  # input size; default: the backbone's own
    drop_rate: float = 0.2  # dropout before each head
    drop_path_rate: float = 0.0  # stochastic depth in the backbone


@dataclass
class TrainConfig:
    """The training loop."""

    mode: str = "fine-tune"  # linear-probe | fine-tune | probe-then-fine-tune
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # learning rate of the heads
    backbone_lr_scale: float = 0.1  # backbone learning rate = lr * this
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd (with momentum)
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine (after warmup) | onecycle | constant
    warmup_epochs: float = 1.0
    freeze_epochs: int = 0  # train only the heads for this many epochs, then unfreeze
    freeze_bn: bool = (
        True  # keep BatchNorm statistics frozen when fine-tuning a pretrained backbone
    )
    accumulate: int = 1  # gradient accumulation steps
    clip_grad: float = 0.0  # max gradient norm; 0 disables
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 disables
    amp: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPUs without bf16) | off | bf16 | fp16
    channels_last: bool = True
    augment: str = "light"  # none | light | randaugment | trivialaugment
    hflip: float = 0.5  # probability of a horizontal flip (0 for digits and text)
    rotate: float = 0.0  # max rotation in degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength
    mixup: float = 0.0  # MixUp alpha; 0 disables
    cutmix: float = 0.0  # CutMix alpha; 0 disables
    balanced_sampling: bool = False  # sample images inversely to their class frequency
    patience: int = 0  # stop after this many epochs without improvement; 0 disables
    monitor: str = "auto"  # metric for best-checkpoint selection; auto: mean of head primaries
    seed: int = 0
    deterministic: bool = False
    workers: int = 0  # DataLoader worker processes
    cache: str = "auto"  # decode-once image cache: auto | memory | off
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class Config:
    """A whole pictag job."""

    data: DataConfig = field(default_factory=DataConfig)
    heads: dict[str, HeadConfig] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "folder", "csv", "voc", "coco", "filename", "builtin"),
    "data.builtin": ("digits", "multilabel", "multioutput"),
    "data.policy": ("strict", "skip"),
    "heads.*.kind": ("multiclass", "multilabel"),
    "heads.*.loss": ("default", "focal", "asl"),
    "heads.*.threshold_by": ("f1", "precision", "recall", "fixed"),
    "train.mode": ("linear-probe", "fine-tune", "probe-then-fine-tune"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "onecycle", "constant"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "train.augment": ("none", "light", "randaugment", "trivialaugment"),
    "train.cache": ("auto", "memory", "off"),
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (or start from defaults) and apply overrides.

    Args:
        path: YAML file; relative paths in its ``data`` section are resolved against its folder.
        overrides: ``section.key=value`` strings, the value parsed as YAML (``--set``).
        values: ``section.key`` -> value, applied before ``overrides`` without parsing
            (command-line flags such as ``--pattern`` whose text must stay as typed).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with data/heads/model/train sections")
        _resolve_data_paths(raw, path.parent)
    for key, value in (values or {}).items():
        _set_raw(raw, key, value)
    for item in overrides or []:
        set_key(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (as read from YAML)."""
    config = _build(Config, raw, "")
    _check_choices(config)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain, JSON/YAML-ready form of a config."""
    return dataclasses.asdict(config)


def set_key(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override (value parsed as YAML) to raw config data."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: {text!r} is not a valid YAML value ({err})") from None
    _set_raw(raw, key.strip(), value)


def _set_raw(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, str) and part == parts[1] and parts[0] == "heads":
            child = node[part] = {"kind": child}  # `heads.tags=multilabel` set earlier
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("labels", "split_file"):
        if isinstance(data.get(key), str):
            data[key] = os.path.normpath(base / data[key])
    images = data.get("images")
    if isinstance(images, str):
        data["images"] = os.path.normpath(base / images)
    elif isinstance(images, list):
        data["images"] = [os.path.normpath(base / p) if isinstance(p, str) else p for p in images]


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key {key!r}; valid keys here: {', '.join(names)}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        if hint is HeadConfig and isinstance(value, str):
            value = {"kind": value}  # shorthand `heads: {tags: multilabel}`
        return _build(hint, value or {}, key)
    if origin is list:
        if key == "data.images" and isinstance(value, str):
            value = [value]  # one image folder is the common case
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, bool):
            return "on" if value else "off"  # YAML 1.1 reads `amp: off` as false
        if isinstance(value, (str, int, float)):
            return str(value)  # labels such as 1 or 2010 arrive from YAML as numbers
    else:
        return value
    raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")


def _check_choices(config: Config) -> None:
    for key, allowed in CHOICES.items():
        section, name = key.split(".", 1)
        if section == "heads":
            items = [(f"heads.{h}.{name[2:]}", hc) for h, hc in config.heads.items()]
        else:
            items = [(key, getattr(config, section))]
        for full_key, obj in items:
            value = getattr(obj, full_key.rsplit(".", 1)[1])
            if value not in allowed:
                raise ConfigError(f"{full_key}: must be one of {', '.join(allowed)}; got {value!r}")
    if config.data.val_fraction + config.data.test_fraction >= 1:
        raise ConfigError("data.val_fraction + data.test_fraction must be below 1")
    for name, head in config.heads.items():
        if head.columns is not None and head.kind != "multilabel":
            raise ConfigError(f"heads.{name}.columns (0/1 columns) needs kind: multilabel")
