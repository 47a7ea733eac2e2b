"""Atomic file writes: a crash or ``kill -9`` at any moment leaves the old file or the new one,
never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600, and some writers (safetensors) make their file anew, 0600 too:
        # give the written file the permissions any other file of the user's gets.
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux, elsewhere read back by setting
    it (which, for an instant, changes it for every thread of the process)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def readable_safetensors(path: str | Path, fix: str) -> Iterator[None]:
    """Reads of ``path`` inside raise a ValueError that names the file and ``fix`` (what to
    do) when it is cut short or no safetensors file, instead of safetensors' bare error."""
    try:
        yield
    except safetensors.SafetensorError as err:
        raise ValueError(
            f"{path} cannot be read as safetensors ({err}): the file is cut short (a partial "
            f"copy or download?) or not such a file; {fix}"
        ) from None
