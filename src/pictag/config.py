# ruff: noqa: RUF009 -- `_f` returns dataclasses.field(...), which the rule cannot see
"""pictag's configuration: one YAML file with ``data``, ``heads``, ``model`` and ``train`` sections.

Every section is a dataclass whose fields carry a description and, where a range makes sense,
limits (``gt``, ``ge``, ``lt``, ``le``) as field metadata. Loading checks every type, choice,
range and cross-field rule at once, and each error names the key (``train.lr``) and what it
accepts, so a typo costs a second instead of an epoch and never falls back to a default.
``--set key=value`` on the command line overrides any field, the value parsed as YAML.
Kind-specific rules (which losses a kind offers, ``columns`` needs a multilabel head) belong to
:mod:`pictag.heads`; this module knows no kind names. The ``train`` section lives in
:mod:`pictag.config_train`, the editing of raw data before it is built (``--set``, relative
paths, short forms) in :mod:`pictag.config_raw`; :mod:`pictag.config_schema` turns the same
metadata into a JSON Schema for editors.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pictag.config_parse import ConfigError, build, check_fields
from pictag.config_parse import setting as _f
from pictag.config_raw import (
    refines_heads,
    resolve_data_paths,
    set_key,
    set_raw,
    shorthands,
)
from pictag.config_train import (
    MAX_SEED,
    TRAIN_CHOICES,
    TrainConfig,
    check_train,
    resolve_train_defaults,
)

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit


@dataclass
class HeadConfig:
    """One named output of the model."""

    kind: str = _f("multiclass", "a head kind (see pictag.heads), e.g. multiclass or multilabel")
    column: str | None = _f(None, "CSV column with the class name or tag list; default: head name")
    columns: list[str] | None = _f(None, "CSV group of 0/1 columns, one per tag (multilabel heads)")
    separator: str | None = _f(None, "tag separator in `column`; null: detect | ; , or spaces")
    group: str | None = _f(None, "named group of data.pattern with this label; default: head name")
    labels: list[str] | None = _f(None, "explicit label list (order kept); other labels are errors")
    rename: dict[str, str] = _f(dict, "raw label -> label name")
    bins: list[float] | None = _f(None, "ascending edges: year [2010] -> '<=2009', '>=2010'")
    min_count: int = _f(0, "classes with fewer images are folded into `other_label`", ge=0)
    other_label: str = _f("other", "the class that collects folded rare classes")
    weight: float = _f(1.0, "weight of this head's loss in the summed objective", ge=0)
    loss: str = _f("default", "'default' or a loss the head kind offers (see pictag.heads)")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", ge=0, lt=1)
    balance: bool = _f(False, "class weights or positive weights from label counts")
    hidden: int = _f(0, "width of an optional hidden layer before the linear layer; 0: none", ge=0)
    threshold_by: str = _f(
        "f1",
        "decision threshold tuned on val (multilabel heads, two-class multiclass heads): "
        "f1 | precision | recall | fixed",
    )
    threshold_target: float = _f(0.5, "precision/recall to reach or fixed threshold", gt=0, le=1)
    positive: str | None = _f(None, "two-class multiclass: the positive class; default: 2nd label")
    masks: str | None = _f(
        None, "segmentation: folder of mask files, matched to images by file name (stem)"
    )
    mask_values: dict[str, str] | None = _f(
        None,
        "segmentation: mask value or range -> class name or `ignore`, e.g. {1: pet, 3: ignore} "
        "or {0: background, 1-255: person}; default: the value is the class index, 255 ignore",
    )
    mask_colors: dict[str, str] | None = _f(
        None, "segmentation, RGB masks: colour (#rrggbb or r,g,b) -> class name or `ignore`"
    )


@dataclass
class DataConfig:
    """Where the images and labels are, and how to split and check them."""

    format: str = _f(
        "auto",
        "auto | folder | csv | voc | coco | yolo | boxcsv (a row per box) | filename | "
        "masks (images whose heads all read heads.NAME.masks folders) | builtin",
    )
    images: list[str] = _f(list, "image root(s); CSV ids resolve in each in turn")
    labels: str | None = _f(None, "CSV/TSV label file, or COCO instances JSON")
    image_column: str | None = _f(None, "CSV column with the image path or id; default: the first")
    pattern: str | None = _f(None, "file-name regex, one named group per head (format filename)")
    keep_difficult: bool = _f(False, "Pascal VOC: keep objects marked difficult")
    allow_outside_roots: bool = _f(
        False, "read image paths of a label file that leave data.images (../ or absolute)"
    )
    all_heads: bool = _f(
        False,
        "read every head the source names (file-name groups, built-in heads, a 0/1 CSV group, "
        "a folder's one head); the heads section then only changes their settings. "
        "`--set heads.NAME.KEY=...` turns it on when the config names no heads",
    )
    builtin: str = _f(
        "multioutput",
        "built-in demo task: digits | multilabel | multioutput | detection | segmentation "
        "(head digit_mask: which digit each stroke pixel belongs to, or background)",
    )
    split_column: str | None = _f(None, "CSV column with train/val/test per row")
    split_file: str | None = _f(None, "CSV of image,split written by an earlier run or by hand")
    val_fraction: float = _f(0.15, "share of unsplit images held out for validation", ge=0, lt=1)
    test_fraction: float = _f(0.0, "share of unsplit images held out for testing", ge=0, lt=1)
    seed: int = _f(0, "seed of the automatic split", ge=0, le=MAX_SEED)
    policy: str = _f("strict", "strict: stop on problems; skip: drop bad rows, list them in a file")
    max_pixels: int = _f(DEFAULT_MAX_PIXELS, "refuse larger images (decompression bombs)", ge=1)
    min_per_label: int = _f(2, "labels with fewer images cannot be stratified; reported", ge=1)
    near_duplicates: int | None = _f(
        2,
        "warn of near-duplicate images: perceptual hashes at most this many bits apart (of 64); "
        "null: no hashing",
        ge=0,
        le=64,
    )


@dataclass
class ModelConfig:
    """The backbone and how the heads sit on it."""

    backbone: str = _f("tf_efficientnet_lite0", "any timm model name, or 'small_cnn'")
    pretrained: str = _f(
        "auto", "auto (offline; none for small_cnn) | offline (bundled Lite0) | hub | none | path"
    )
    image_size: int | None = _f(None, "input size in pixels; default: the backbone's own", ge=16)
    drop_rate: float = _f(0.2, "dropout before each head", ge=0, lt=1)
    drop_path_rate: float = _f(0.0, "stochastic depth in the backbone", ge=0, lt=1)


@dataclass
class Config:
    """A whole pictag job."""

    data: DataConfig = _f(DataConfig, "where the images and labels are, how to split them")
    heads: dict[str, HeadConfig] = _f(dict, "named outputs: name -> head settings, or just a kind")
    model: ModelConfig = _f(ModelConfig, "the backbone and how the heads sit on it")
    train: TrainConfig = _f(TrainConfig, "the training loop")


CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": (
        "auto",
        "folder",
        "csv",
        "voc",
        "coco",
        "yolo",
        "boxcsv",
        "filename",
        "masks",
        "builtin",
    ),
    "data.builtin": ("digits", "multilabel", "multioutput", "detection", "segmentation"),
    "data.policy": ("strict", "skip"),
    "heads.*.threshold_by": ("f1", "precision", "recall", "fixed"),
    **TRAIN_CHOICES,
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (or start from defaults) and apply overrides.

    Args:
        path: YAML file; relative paths in its ``data`` section and heads' ``masks`` folders
            are resolved against its folder.
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
        resolve_data_paths(raw, path.parent)
    for key, value in (values or {}).items():
        set_raw(raw, key, value)
    named_heads = bool(raw.get("heads"))
    for item in overrides or []:
        set_key(raw, item)
    if not named_heads and refines_heads(overrides or []):
        # `--set heads.age.bins=...` on a config that names no heads changes the age head of
        # the source; it must not drop the source's other heads.
        data = raw.setdefault("data", {})
        if isinstance(data, dict):
            data.setdefault("all_heads", True)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data (as read from YAML)."""
    config = build(Config, shorthands(raw), "")
    resolve_defaults(config)
    _check(config)
    return config


# Defaults that follow another choice: each optimizer its own weight decay (AdamW's decoupled
# 0.05 as in timm; SGD's L2 5e-4 as in the classic CIFAR/ImageNet recipes).
SMALL_CNN = "small_cnn"  # the one backbone that has no pretrained weights


def resolve_defaults(config: Config) -> None:
    """Fill the settings whose default follows another choice, so that the resolved config
    shows the numbers used: ``pretrained: auto`` -> ``none`` for ``small_cnn`` (else
    ``offline``); ``backbone_lr_scale`` 1 from scratch, else 0.1; ``crop_scale`` 0.25 from
    scratch, else 0.6; ``weight_decay`` by optimizer.
    """
    model, train = config.model, config.train
    model.pretrained = pretrained_for(model.backbone, model.pretrained)
    scratch = model.pretrained.lower() == "none"
    if train.mode == "auto":
        # A probe is seconds on cached features and the best start for the fine-tune.
        train.mode = "fine-tune" if scratch else "probe-then-fine-tune"
    resolve_train_defaults(train, scratch)


def pretrained_for(backbone: str, pretrained: str) -> str:
    """What ``pretrained`` stands for with ``backbone`` (``auto`` resolved)."""
    if str(pretrained).lower() != "auto":
        return pretrained
    return "none" if backbone == SMALL_CNN else "offline"


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain, JSON/YAML-ready form of a config."""
    return dataclasses.asdict(config)


def absolute_data_paths(config: Config) -> None:
    """Make ``data.images``, ``data.labels`` and ``data.split_file`` absolute (in place), so a
    run folder that stores the config reads its data from any working folder."""
    data = config.data
    data.images = [os.path.abspath(p) for p in data.images]
    if data.labels:
        data.labels = os.path.abspath(data.labels)
    if data.split_file:
        data.split_file = os.path.abspath(data.split_file)


def _check(config: Config) -> None:
    """Ranges, choices and cross-field rules; types were checked while building."""
    sections = [(name, name, getattr(config, name)) for name in ("data", "model", "train")]
    sections += [(f"heads.{name}", "heads.*", head) for name, head in config.heads.items()]
    for where, pattern, section in sections:
        check_fields(section, where, pattern, CHOICES)
    val, test = config.data.val_fraction, config.data.test_fraction
    if val + test >= 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction: must be < 1; got {val} + {test}"
        )
    for name, head in config.heads.items():
        if head.bins and any(a >= b for a, b in zip(head.bins, head.bins[1:], strict=False)):
            raise ConfigError(f"heads.{name}.bins: must be strictly ascending; got {head.bins}")
    check_train(config.train)
    if config.heads and not any(head.weight > 0 for head in config.heads.values()):
        raise ConfigError("heads.*.weight: at least one head needs a weight > 0")
