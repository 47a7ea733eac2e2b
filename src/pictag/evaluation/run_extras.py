"""What else a run folder holds for its report: the training history (``metrics.jsonl``, or
the saved model's metrics for an old probe run) and the counts of a ``pictag audit``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pictag.run import AUDIT_HTML, AUDIT_JSON

HISTORY_FILE = "metrics.jsonl"


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of the run's ``metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def saved_fit(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The saved model's validation metrics (``pictag.json``) as a one-record history, for a
    run without ``metrics.jsonl`` (linear probes trained before they logged their fit), whose
    report should say so rather than leave the training section out. Empty when ``meta`` holds
    no metrics."""
    metrics, epoch = meta.get("metrics"), meta.get("epoch")
    if not isinstance(metrics, Mapping) or epoch is None:
        return []
    values = {f"val/{key}": value for key, value in metrics.items()}
    return [{"epoch": epoch, "mode": meta.get("mode"), **values}]


def audit_summary(run_dir: Path, out_dir: Path) -> dict[str, Any] | None:
    """The counts of the run's ``pictag audit`` findings and the path of its page relative to
    the report, or None when the run was not audited."""
    path = run_dir / AUDIT_JSON
    if not path.is_file():
        return None
    audit = json.loads(path.read_text(encoding="utf-8"))
    return {"html": os.path.relpath(run_dir / AUDIT_HTML, out_dir), **audit_counts(audit)}


def audit_counts(audit: Mapping[str, Any]) -> dict[str, int]:
    """How many label issues, near-duplicate pairs (and of those, pairs across splits: leaks)
    and outliers an audit (``audit.json``) holds."""
    pairs = audit.get("near_duplicates") or []
    return {
        "label_issues": len(audit.get("label_issues") or []),
        "near_duplicates": len(pairs),
        "across_splits": sum(1 for pair in pairs if len(set(pair.get("splits", []))) > 1),
        "outliers": len(audit.get("outliers") or []),
    }
