"""``RUN_DIR/auto_backend.json``: which runtime ``--backend auto`` measured fastest for the
run's ``model.onnx`` on a machine, so that the next process on that machine takes it without
compiling OpenVINO and timing both again (about 2 s of the first ``pictag predict`` on 2 cores).

A choice is kept per machine key (the model file's size and modification time, the CPU's
name, its core count, the thread budget and the two runtimes' versions): a re-export, another
CPU, thread budget or runtime version measures anew. Delete the file to measure again.
Writing it is best effort: a read-only run folder only costs the measurement each time.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from pictag.cpuinfo import cpuinfo_fields
from pictag.fileio import write_json

AUTO_BACKEND_FILE = "auto_backend.json"
FORMAT = "pictag-auto-backend/1"
MAX_MACHINES = 8  # choices kept in one file; the oldest go first

logger = logging.getLogger(__name__)


def machine_key(model: tuple[int, int], threads: int) -> dict[str, Any]:
    """What a measured choice depends on, for the model file of ``(size, mtime_ns)`` ``model``
    run with ``threads`` threads."""
    return {
        "model": list(model),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
    }


def read_auto_choice(run_dir: str | Path, key: dict[str, Any]) -> str | None:
    """The backend stored for ``key``, or None (no file, another format, no such key)."""
    for entry in _entries(Path(run_dir) / AUTO_BACKEND_FILE):
        if entry.get("key") == key and isinstance(entry.get("choice"), str):
            return entry["choice"]
    return None


def write_auto_choice(
    run_dir: str | Path, key: dict[str, Any], choice: str, timings_ms: dict[str, float]
) -> None:
    """Store ``choice`` for ``key`` (replacing an older one for it); never raises for a folder
    that cannot be written."""
    path = Path(run_dir) / AUTO_BACKEND_FILE
    kept = [entry for entry in _entries(path) if entry.get("key") != key]
    entry = {"key": key, "choice": choice, "ms": timings_ms}
    document = {"format": FORMAT, "choices": [*kept[-(MAX_MACHINES - 1) :], entry]}
    try:
        write_json(path, document)
    except OSError as err:
        logger.info("cannot store the auto backend's choice in %s (%s)", path, err)


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` says."""
    name = cpuinfo_fields(cpuinfo).get("model name")
    return name or platform.processor() or platform.machine()


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return []
    choices = document.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
