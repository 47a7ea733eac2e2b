"""What ``pictag train --resume`` starts from: the run's stored config, or, for a run that
ended by itself, its result as it stands."""

from __future__ import annotations

import logging
from pathlib import Path

from pictag.config import Config
from pictag.evaluation.run_extras import read_history
from pictag.run import META_FILE, read_resume_config, read_run_info
from pictag.training.checkpoint import has_last, last_extra
from pictag.training.epochs import TrainResult
from pictag.training.runtime import process_rank

log = logging.getLogger(__name__)


def ended_result(out_dir: Path) -> TrainResult | None:
    """The result of a run that ended by itself (an early stop, a budget's stop), which a
    resume leaves as it is; None when there is something to continue."""
    extra = last_extra(out_dir)
    if not extra or not extra.get("ended"):
        return None
    history = extra.get("history", [])
    epochs = max((record.get("epoch", 0) for record in history), default=0)
    if process_rank() == 0:
        log.info("nothing to resume: the run ended after epoch %d (%s)", epochs, extra["ended"])
    return TrainResult(
        out_dir, extra["best_epoch"], extra["best_score"], extra.get("best_metrics", {}), history
    )


def resumed_config(out_dir: Path) -> Config:
    """The run's own config and split, when it saved a finished epoch to resume from."""
    if not out_dir.is_dir():
        raise FileNotFoundError(f"nothing to resume: {out_dir} does not exist")
    if not has_last(out_dir) and (out_dir / META_FILE).is_file():
        probe = read_run_info(out_dir).meta.get("epoch") == 0 and not any(
            record.get("epoch", 0) > 0 for record in read_history(out_dir)
        )
        what = (
            "its model is the linear probe and no fine-tune epoch was started"
            if probe
            else f"it holds a model but no resumable state ({out_dir / 'last'}/ is gone)"
        )
        raise FileNotFoundError(
            f"nothing to resume in {out_dir}: {what}; evaluate or predict with it as it is, or "
            "train again with --overwrite"
        )
    if not has_last(out_dir):
        raise FileNotFoundError(
            f"nothing to resume in {out_dir}: no finished epoch was saved there"
        )
    return read_resume_config(out_dir)
