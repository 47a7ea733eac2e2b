"""ONNX Runtime's optimised copy of an exported model, kept for the machine that made it.

Opening an ONNX Runtime session runs its full graph optimisation, whose CPU layout changes
(blocked ``NCHWc`` convolutions) make inference fast but cost more than the rest of opening:
a one-thread session of ResNet-50 0.27 s against 0.12 s for the same file with the optimisation
already done, Lite0 0.078 s against 0.019 s, on 2 cores; ``pictag predict`` opens two or three
sessions. ONNX Runtime can save the optimised graph and load it with optimisation off (same
outputs, bit for bit, at the same speed), but that graph only fits the CPU it was made for, so
the copy is kept per machine and model file:
``MODEL_DIR/onnxruntime_cache/<model stem>-<file identity>-<machine>.onnx``.

The file identity is its size, modification time, inode and status-change time: a copy that
keeps the modification time (``cp -p``, ``rsync -a``, an archive) or a rewrite in place still
gets a new inode or status-change time, which no tool can set, so a copy is never opened for
another file. The machine is a digest of ONNX Runtime's version and the CPU's name and feature
flags; where the flags cannot be read (not Linux) nothing is kept. A folder that cannot be
written only costs the optimisation each time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from pictag.cpuinfo import CPUINFO, cpuinfo_fields

CACHE_DIR = "onnxruntime_cache"
STALE_TEMP_S = 600  # a temporary copy this old was left by a process that died while saving

logger = logging.getLogger(__name__)


def optimized_copy(path: Path, ort_version: str) -> Path | None:
    """Where the optimised copy of ``path`` for this machine is or would be kept (None when
    ``path`` cannot be read or the CPU's feature flags are unknown)."""
    signature = cpu_signature()
    try:
        stat = path.stat()
    except OSError:
        return None
    if not signature:
        return None
    machine = hashlib.sha1(f"{ort_version}|{signature}".encode()).hexdigest()[:12]
    identity = f"{stat.st_size}.{stat.st_mtime_ns}.{stat.st_ino}.{stat.st_ctime_ns}"
    identity = identity.replace("-", "n")  # a time before 1970: names split at "-"
    return path.parent / CACHE_DIR / f"{path.stem}-{identity}-{machine}.onnx"


def writable_temp(copy: Path) -> Path | None:
    """A temporary path next to ``copy`` for ONNX Runtime to save to (renamed into place by
    :func:`keep`), or None when its folder cannot be made or written."""
    try:
        copy.parent.mkdir(exist_ok=True)
    except OSError:
        return None
    if not os.access(copy.parent, os.W_OK):
        return None
    return copy.with_name(f"{copy.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def keep(temp: Path, copy: Path) -> None:
    """Move a saved copy into place (whole, so a reader never sees half a file), then remove
    the copies of the model's older exports and temporary copies left by processes that died
    while saving (other machines' copies of this export stay: machines sharing a folder would
    otherwise remake theirs at every open); never raises."""
    try:
        os.replace(temp, copy)
    except OSError as err:
        logger.info("cannot keep ONNX Runtime's optimised copy at %s (%s)", copy, err)
        discard(temp)
        return
    model, identity, _ = copy.stem.rsplit("-", 2)
    try:
        entries = list(copy.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        parts = entry.name.rsplit("-", 2)
        if entry == copy or len(parts) != 3 or parts[0] != model:
            continue
        older_export = entry.suffix == ".onnx" and parts[1] != identity
        dead_temp = entry.suffix == ".tmp" and _older_than(entry, STALE_TEMP_S)
        if older_export or dead_temp:
            discard(entry)


def discard(path: Path) -> None:
    """Remove a file if it can be; never raises."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.info("cannot remove %s (%s)", path, err)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def cpu_signature(cpuinfo: str = CPUINFO) -> str:
    """The CPU's model name and feature flags (Linux ``/proc/cpuinfo``: ``flags`` on x86,
    ``Features`` on ARM), which decide the kernels and data layouts ONNX Runtime optimises
    for; empty when the flags cannot be read."""
    fields = cpuinfo_fields(cpuinfo)
    flags = fields.get("flags") or fields.get("features")
    if not flags:
        return ""
    return "|".join(value for value in (fields.get("model name"), flags) if value)
