"""ONNX Runtime's optimised copy of an exported model, kept for the machine that made it.

Opening an ONNX Runtime session runs its full graph optimisation, whose CPU layout changes
(blocked ``NCHWc`` convolutions) make inference fast but cost more than the rest of opening:
ResNet-50 0.25-0.53 s against 0.07-0.1 s for the same file with the optimisation already done,
Lite0 0.04-0.07 s against 0.013 s, on 2 cores; ``pictag predict`` opens two or three sessions.
ONNX Runtime can save the optimised graph and load it with optimisation off (same outputs, bit
for bit, at the same speed), but that graph only fits the CPU it was made for, so the copy is
kept per machine: ``MODEL_DIR/onnxruntime_cache/<model stem>-<size>-<mtime_ns>-<machine>.onnx``,
the machine being a digest of ONNX Runtime's version and the CPU's name and feature flags. A
re-export makes a new copy and removes the stale ones; a folder that cannot be written only
costs the optimisation each time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

CACHE_DIR = "onnxruntime_cache"

logger = logging.getLogger(__name__)


def optimized_copy(path: Path, ort_version: str) -> Path | None:
    """Where the optimised copy of ``path`` for this machine is or would be kept (None when
    ``path`` cannot be read)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    machine = hashlib.sha1(f"{ort_version}|{cpu_signature()}".encode()).hexdigest()[:12]
    name = f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}-{machine}.onnx"
    return path.parent / CACHE_DIR / name


def writable_temp(copy: Path) -> Path | None:
    """A temporary path next to ``copy`` for ONNX Runtime to save to (renamed into place by
    :func:`keep`), or None when its folder cannot be made or written."""
    try:
        copy.parent.mkdir(exist_ok=True)
    except OSError:
        return None
    if not os.access(copy.parent, os.W_OK):
        return None
    return copy.with_name(f"{copy.stem}.{os.getpid()}.tmp")


def keep(temp: Path, copy: Path) -> None:
    """Move a saved copy into place (whole, so a reader never sees half a file) and remove the
    copies of older exports of the same model; never raises."""
    try:
        os.replace(temp, copy)
    except OSError as err:
        logger.info("cannot keep ONNX Runtime's optimised copy at %s (%s)", copy, err)
        temp.unlink(missing_ok=True)
        return
    stem, size, mtime, _ = copy.stem.rsplit("-", 3)
    for other in copy.parent.glob(f"{stem}-*.onnx"):
        parts = other.stem.rsplit("-", 3)
        if len(parts) == 4 and parts[0] == stem and parts[1:3] != [size, mtime]:
            other.unlink(missing_ok=True)  # an export that has been replaced


def cpu_signature(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and feature flags (Linux), else what ``platform`` says: what
    decides the kernels and data layouts ONNX Runtime optimises for."""
    found: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features") and key not in found:
                    found[key] = value.strip()
    except OSError:
        pass
    return "|".join(found.values()) or f"{platform.processor()}|{platform.machine()}"
