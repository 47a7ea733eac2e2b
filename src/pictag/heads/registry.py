"""Look up a head kind by name, and check a config's head options against the kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pictag.config import Config, ConfigError, HeadConfig
from pictag.heads.detection import DETECTION
from pictag.heads.kinds import HeadKind
from pictag.heads.multiclass import MULTICLASS
from pictag.heads.multilabel import MULTILABEL
from pictag.heads.segmentation import SEGMENTATION

KINDS: dict[str, HeadKind] = {
    kind.name: kind for kind in (MULTICLASS, MULTILABEL, DETECTION, SEGMENTATION)
}
# Head options that only some kinds take (each kind lists the ones it accepts in `options`).
KIND_OPTIONS = frozenset().union(*(kind.options for kind in KINDS.values()))
MONITOR_WORDS = ("auto", "loss", "score")  # train.monitor values that name no head


def get_kind(name: str) -> HeadKind:
    """The head kind called ``name``.

    Raises:
        ValueError: ``name`` is not a known kind; the message lists the known ones.
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown head kind {name!r}; use one of {sorted(KINDS)}") from None


def label_counts(kind: HeadKind | str, targets: np.ndarray, num_labels: int) -> np.ndarray:
    """Positives per class (multiclass) or per label (multilabel), missing targets skipped.

    Args:
        kind: A head kind or its name.
        targets: Training targets: class indices ``[N]`` or multi-hot ``[N, L]``.
        num_labels: Number of classes or labels.

    Returns:
        int64 counts ``[num_labels]``, the ``counts`` argument of ``kind.make_loss``.
    """
    if isinstance(kind, str):
        kind = get_kind(kind)
    return kind.count_labels(targets, num_labels)


def check_head_config(name: str, cfg: Any, defaults: Any) -> None:
    """Check a head's options against its kind: the kind exists, the loss is one of the kind's,
    and options of other kinds are left at their defaults.

    Args:
        name: Head name.
        cfg: The head's ``HeadConfig``.
        defaults: A default ``HeadConfig``, to tell a set option from an untouched one.

    Raises:
        ValueError: The message names the key (``heads.NAME.loss``) and the valid values.
    """
    if cfg.kind not in KINDS:
        raise ValueError(f"heads.{name}.kind: must be one of {', '.join(KINDS)}; got {cfg.kind!r}")
    kind = KINDS[cfg.kind]
    if cfg.loss not in kind.losses:
        raise ValueError(
            f"heads.{name}.loss: must be one of {', '.join(kind.losses)} for a {kind.name} "
            f"head; got {cfg.loss!r}"
        )
    for option in sorted(KIND_OPTIONS - kind.options):
        if getattr(cfg, option) != getattr(defaults, option):
            takers = [k.name for k in KINDS.values() if option in k.options]
            raise ValueError(
                f"heads.{name}.{option} applies to {' and '.join(takers)} heads only; "
                f"this head is {kind.name}: remove the option or change heads.{name}.kind"
            )


def check_config(config: Config) -> None:
    """The checks of a config that need the head kinds: each head's kind and options, and
    ``train.monitor``. Run when a config is loaded, before any work.

    Raises:
        ConfigError: The message names the key and the valid values.
    """
    defaults = HeadConfig()
    try:
        for name, cfg in config.heads.items():
            check_head_config(name, cfg, defaults)
        check_monitor(config.train.monitor, {name: cfg.kind for name, cfg in config.heads.items()})
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_monitor(monitor: str, kinds: Mapping[str, str]) -> None:
    """Check ``train.monitor``: ``auto``, ``loss``, ``score`` or ``HEAD/METRIC`` of a head.

    Args:
        monitor: The value.
        kinds: Head name -> kind name; with no heads (a source that names its own head, such as
            a folder tree) any head name is accepted with a metric that some kind has.

    Raises:
        ValueError: The message lists every valid value.
    """
    valid = list(MONITOR_WORDS)
    for head, kind in kinds.items():
        if kind in KINDS:
            valid += [f"{head}/{metric}" for metric in KINDS[kind].metric_names]
    if not kinds and "/" in monitor:
        metric = monitor.partition("/")[2]
        if any(metric in kind.metric_names for kind in KINDS.values()):
            return
        valid += [f"HEAD/{m}" for k in KINDS.values() for m in k.metric_names]
    if monitor not in valid:
        raise ValueError(f"train.monitor: must be one of {', '.join(valid)}; got {monitor!r}")


def higher_is_better(monitor: str, kinds: Mapping[str, str]) -> bool:
    """Whether a larger value of the monitored metric is better (``loss``: no)."""
    if monitor in MONITOR_WORDS:
        return monitor != "loss"
    head, _, metric = monitor.partition("/")
    return metric not in get_kind(kinds[head]).lower_is_better
