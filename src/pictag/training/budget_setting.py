"""What ``train.budget`` stands for on a device, and the lines a run prints about it."""

from __future__ import annotations

import torch

from pictag.config_parse import parse_duration
from pictag.training.announce import duration

# The budget of a CPU run when none is set: what a user waits for at the desk. On ~1,000-5,000
# photos it buys the linear probe plus a few fine-tune epochs of EfficientNet-Lite0 on 2 cores.
CPU_BUDGET_S = 300.0


def budget_seconds(setting: str, device: torch.device, deterministic: bool = False) -> float | None:
    """The budget ``train.budget`` stands for on ``device``, in seconds; None: no budget.

    ``auto`` is :data:`CPU_BUDGET_S` on a CPU and no budget on a GPU (where a normal
    fine-tune of ``train.epochs`` takes minutes anyway), nor for a ``deterministic`` run: a
    budget plans from the speed it times, so two runs on a machine busy in different ways would
    train different epochs and images (see :func:`deterministic_line`).
    """
    if setting == "off":
        return None
    if setting == "auto":
        return CPU_BUDGET_S if device.type == "cpu" and not deterministic else None
    return parse_duration(setting)


def deterministic_line(setting: str, device: torch.device) -> str | None:
    """What a ``deterministic`` run says of its budget (None: nothing to say, as on a GPU)."""
    if setting == "off" or (setting == "auto" and device.type != "cpu"):
        return None
    if setting == "auto":
        return (
            "budget: none, as train.deterministic asks for the same results every run and a "
            "time budget plans from the speed it times on this machine; all of the "
            "train.epochs are trained (--budget 5m sets one anyway)"
        )
    return (
        f"budget: {setting} plans from the speed it times on this machine, so two "
        "deterministic runs can train different epochs or images and differ; to repeat this "
        "run exactly, train again with train.budget=off and the epochs (and "
        "train.epoch_images) its plan chooses"
    )


def budget_line(setting: str, seconds: float | None, max_epochs: int, probe: bool) -> str | None:
    """The plan line of a budgeted run, before it starts (None without a budget)."""
    if seconds is None:
        return None
    why = " (auto: the default on a CPU)" if setting == "auto" else ""
    first = "the probe, then " if probe else ""
    return (
        f"budget: {duration(seconds)}{why}: {first}as many of the {max_epochs} fine-tune epochs "
        f"as fit, timed on this machine (train.budget=off for exactly train.epochs)"
    )
