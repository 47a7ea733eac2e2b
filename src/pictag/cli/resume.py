"""``pictag train --resume``: what may come with it, and the hint after a Ctrl-C."""

from __future__ import annotations

import argparse
from pathlib import Path

from pictag.config import ConfigError

# What --resume cannot take: the run continues with the config and split it stored.
_NOT_WITH_RESUME = ("config", "images", "labels", "head", "format", "pattern", "policy", "set",
                    "budget", "out", "overwrite")  # fmt: skip


def check_resume_alone(args: argparse.Namespace) -> None:
    """Refuse settings beside --resume, which would otherwise be dropped without a word."""
    given = [name for name in _NOT_WITH_RESUME if getattr(args, name, None)]
    if given:
        flags = ", ".join(name if name == "config" else f"--{name}" for name in given)
        raise ConfigError(
            f"--resume continues {args.resume} with the config and split it stored, so {flags} "
            "would not be applied: drop them, or start a new run with --out"
        )


def resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted ``pictag train``, when it saved something to continue."""
    run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command != "train" or not run_dir or not (Path(run_dir) / "last").is_dir():
        return ""
    return f"; continue with: pictag train --resume {run_dir}"
