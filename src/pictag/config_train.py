"""The ``train`` section of a pictag config: its fields, choices, cross-field rules and the
defaults that follow other choices (the backbone's weights, the optimizer)."""

from __future__ import annotations

from dataclasses import dataclass

from pictag.config_parse import ConfigError, parse_duration
from pictag.config_parse import setting as _f

MAX_SEED = 2**32 - 1  # NumPy and the stratified splitter refuse larger (and negative) seeds
WEIGHT_DECAY = {"adamw": 0.05, "sgd": 5e-4}
# `light`'s smallest crop (share of the image's area): a from-scratch net needs the variety;
# a pretrained one, fine-tuned briefly, does better on crops close to the whole image.
SCRATCH_CROP_SCALE = 0.25
PRETRAINED_CROP_SCALE = 0.6
TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "train.mode": ("auto", "linear-probe", "fine-tune", "probe-then-fine-tune"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "onecycle", "constant"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "train.augment": ("none", "light", "randaugment", "trivialaugment"),
    "train.cache": ("auto", "memory", "off"),
}


@dataclass
class TrainConfig:
    """The training loop."""

    mode: str = _f(
        "auto",
        "auto (probe-then-fine-tune with pretrained weights, else fine-tune) | linear-probe | "
        "fine-tune | probe-then-fine-tune",
    )
    budget: str = _f(
        "auto",
        "wall-clock budget of the run: a duration (90s, 5m, 1h30m) plans the probe and as many "
        "fine-tune epochs as fit (at most `epochs`); auto: 5m on a CPU, none on a GPU or "
        "with `deterministic` (a plan from timed speed differs from run to run); off",
    )
    epochs: int = _f(10, "passes over the training images", ge=1)
    epoch_images: int = _f(
        0,
        "images per fine-tune epoch, a new random draw each epoch; 0: all of them (a budget "
        "sets it when only part of an epoch fits)",
        ge=0,
    )
    batch_size: int = _f(32, "images per step (per process under torchrun)", ge=1)
    lr: float = _f(1e-3, "learning rate of the heads", gt=0)
    backbone_lr_scale: float | None = _f(
        None, "backbone lr = lr * this; default: 0.1 with pretrained weights, 1 from scratch", ge=0
    )
    weight_decay: float | None = _f(
        None, "decoupled (adamw) or L2 (sgd) weight decay; default: 0.05 adamw, 5e-4 sgd", ge=0
    )
    optimizer: str = _f("adamw", "adamw | sgd (with momentum)")
    momentum: float = _f(0.9, "sgd momentum", ge=0, lt=1)
    nesterov: bool = _f(False, "sgd: Nesterov momentum")
    schedule: str = _f("cosine", "cosine (after warmup) | onecycle | constant")
    warmup_epochs: float = _f(1.0, "epochs of linear learning-rate warmup", ge=0)
    freeze_epochs: int = _f(0, "train only the heads for this many epochs, then unfreeze", ge=0)
    freeze_bn: bool = _f(True, "freeze BatchNorm statistics when fine-tuning a pretrained net")
    accumulate: int = _f(1, "gradient accumulation steps", ge=1)
    clip_grad: float = _f(0.0, "max gradient norm; 0 disables", ge=0)
    ema: float = _f(0.0, "EMA decay of the weights (e.g. 0.999); 0 disables", ge=0, lt=1)
    amp: str = _f(
        "auto",
        "auto (GPU: bf16/fp16; CPU: bf16 if its flags show native bf16, else fp32) | "
        "off | bf16 | fp16",
    )
    channels_last: bool = _f(True, "channels-last memory format (faster convolutions on GPU)")
    augment: str = _f("light", "none | light | randaugment | trivialaugment")
    hflip: float | None = _f(
        None,
        "probability of a horizontal flip; default: 0.5, or 0 when a head's labels are single "
        "characters (digits, letters: flipping changes them)",
        ge=0,
        le=1,
    )
    crop_scale: float | None = _f(
        None,
        "light: the smallest random crop, as a share of the image's area (the largest is the "
        "whole image); default 0.6 with pretrained weights, 0.25 from scratch (and when left "
        "unresolved in code); heads that locate things keep their own 0.6-1 near-square crops",
        gt=0,
        le=1,
    )
    rotate: float = _f(0.0, "max rotation in degrees", ge=0)
    color_jitter: float = _f(0.0, "brightness/contrast/saturation jitter strength", ge=0)
    mixup: float = _f(0.0, "MixUp alpha; 0 disables", ge=0)
    cutmix: float = _f(0.0, "CutMix alpha; 0 disables", ge=0)
    balanced_sampling: bool = _f(False, "sample images inversely to their class frequency")
    patience: int | None = _f(
        None,
        "stop after this many epochs in a row without improving on the best (the probe "
        "included); 0 never stops; default: 3 (after any freeze_epochs) when a time budget "
        "fine-tunes after a probe, else 0",
        ge=0,
    )
    monitor: str = _f("auto", "metric for best-checkpoint selection; auto: mean of head primaries")
    seed: int = _f(0, "seed of weights, augmentation and sampling", ge=0, le=MAX_SEED)
    deterministic: bool = _f(
        False, "ask torch for deterministic kernels (slower); turns the auto time budget off"
    )
    workers: int = _f(0, "DataLoader worker processes", ge=0)
    threads: int = _f(
        0, "CPU threads of torch's kernels; 0: the CPUs this process may use (per process)", ge=0
    )
    probe_flip: bool = _f(
        False, "linear probe: also fit on each training image's mirror image (2x feature time)"
    )
    refit: bool = _f(
        False,
        "linear-probe: refit the heads on train+val once their L2 is chosen on val "
        "(thresholds and reported val metrics stay those of the train-only fit)",
    )
    cache: str = _f("auto", "decode-once image cache: auto | memory | off")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")


def resolve_train_defaults(train: TrainConfig, scratch: bool) -> None:
    """Fill ``backbone_lr_scale`` (1 from scratch, else 0.1), ``crop_scale`` (0.25 from scratch,
    else 0.6) and ``weight_decay`` (by optimizer) where they are unset.

    Args:
        train: The section, changed in place.
        scratch: The backbone starts from random weights.
    """
    if train.backbone_lr_scale is None:
        train.backbone_lr_scale = 1.0 if scratch else 0.1
    if train.crop_scale is None:
        # A pretrained net's short fine-tune starts from features (and probe heads) fitted to
        # whole images: on utkface a fine-tune on crops down to a quarter of the face lost
        # 1.9 points of validation score to the probe, one on crops of at least 0.6 none.
        train.crop_scale = SCRATCH_CROP_SCALE if scratch else PRETRAINED_CROP_SCALE
    if train.weight_decay is None:
        train.weight_decay = WEIGHT_DECAY.get(train.optimizer, 0.0)


def check_train(train: TrainConfig) -> None:
    """The section's cross-field rules (types, ranges and choices are checked with the rest).

    Raises:
        ConfigError: A budget that is not a duration, or a refit outside a linear probe.
    """
    if train.budget not in ("auto", "off"):
        try:
            parse_duration(train.budget)
        except ValueError as err:
            raise ConfigError(f"train.budget: {err}") from None
    if train.refit and train.mode != "linear-probe":
        raise ConfigError(
            f"train.refit: applies to train.mode=linear-probe only (the fine-tune epochs are "
            f"chosen on val, which a refit would have seen); got mode {train.mode}"
        )
