"""Per-epoch metrics to ``metrics.jsonl``, ``metrics.csv`` and, when installed, TensorBoard."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from pictag.fileio import write_text


class MetricsLog:
    """Appends one record per epoch; only rank 0 should create one with ``enabled=True``."""

    def __init__(self, run_dir: Path, enabled: bool = True, history: list[dict] | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.history: list[dict[str, Any]] = list(history or [])
        self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard") if enabled else None

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        clean = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()
        }
        # The JSONL is rewritten whole (atomically) so a resumed run never holds duplicate epochs.
        write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self._clean())
        )
        write_text(self.run_dir / "metrics.csv", self._csv())
        if self._tensorboard is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tensorboard.add_scalar(key, value, record["epoch"])
            self._tensorboard.flush()

    def _clean(self) -> list[dict[str, Any]]:
        return [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in self.history
        ]

    def _csv(self) -> str:
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        return buffer.getvalue()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: `pip install tensorboard`
        return None
    return SummaryWriter(str(path))
