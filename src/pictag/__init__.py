"""pictag: image classification for every task kind -- multi-class, multi-label, multi-output.

The Python API mirrors the command line::

    import pictag

    result = pictag.train("job.yaml", "runs/job")          # or a pictag.config.Config
    result = pictag.train("job.yaml", "runs/job", resume=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pictag.config import Config
    from pictag.training.trainer import TrainResult

from pictag.version import __version__

__all__ = ["__version__", "train"]


def train(
    config: Config | str | Path, out_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train a model (see :func:`pictag.training.trainer.train`); ``config`` may be a YAML path.

    Torch is imported only when this is called, so ``import pictag`` stays cheap.
    """
    from pictag.config import load_config
    from pictag.training.trainer import train as _train

    if not resume and not hasattr(config, "train"):
        config = load_config(config)
    return _train(config, out_dir, resume=resume, progress=progress)  # type: ignore[arg-type]
