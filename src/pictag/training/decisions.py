"""The chosen model's decision parameters (thresholds), tuned on its validation outputs."""

from __future__ import annotations

import logging
from pathlib import Path

from pictag.config import Config
from pictag.evaluation.evaluate import tune_params, tune_run_params
from pictag.run import read_run_info, read_val_outputs, write_params

log = logging.getLogger(__name__)


def tune_decisions(out_dir: Path, config: Config, progress: bool, device: str) -> None:
    """Tune every head's decision parameters (thresholds) on the chosen model's validation
    outputs, kept in memory and saved with the model, and store them in ``pictag.json`` for
    every prediction path. Without saved outputs (a run from before they were kept) the model
    is run over the validation split again."""
    outputs = read_val_outputs(out_dir)
    if outputs is None:
        tune_run_params(out_dir, progress=progress, device=device)
        return
    probs, targets = outputs
    info = read_run_info(out_dir)
    if not all(len(targets[name]) for name in info.heads):
        log.warning("no validation images: decision thresholds keep their defaults")
        return
    write_params(out_dir, tune_params(info.heads, config, probs, targets))
