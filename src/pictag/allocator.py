"""glibc's malloc set to keep freed memory for reuse, for the CPU's eager PyTorch work.

PyTorch takes every tensor's storage from ``malloc``. glibc serves a request above its mmap
threshold (dynamic, at most 32 MB) with fresh pages from the kernel and gives them back on
``free``, so a training step whose activations are that large faults in and zeroes them anew
every time. EfficientNet-Lite0 at 224 px, batch 32, fp32 on 2 cores (``benchmarks/allocator.py``):
265,000-350,000 page faults a step and 10.2-10.9 img/s with glibc's defaults; with mmap and
trimming off, 0-700 faults and 12.1-13.8 img/s, as the steps reuse the heap. A one-epoch
``pictag train`` on oxford-pets-3 took 39-44 s instead of 57-60 s; the pages stay with the
process, so its peak memory rose from 3.7-3.8 to 4.3-4.8 GB. PyTorch's CPU tuning guides get
the same from preloading jemalloc or TCMalloc; this does it in-process with glibc's own
``mallopt``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

# mallopt's parameter numbers, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# The largest value mallopt takes (a C int): free memory at the top of the heap stays up to it.
KEEP_BYTES = 2**31 - 1
# Settings a user may have made for the allocator: theirs are kept.
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
OTHER_MALLOCS = ("jemalloc", "tcmalloc", "mimalloc")


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from the heap and keep freed ones for reuse.

    Returns:
        Whether the setting was made: False off Linux with glibc, where the user has set
        glibc's malloc options (``MALLOC_*_`` variables or ``glibc.malloc`` tunables), and
        where another allocator is preloaded (it has no such cost).
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in OTHER_MALLOCS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Trimming first: with mmap off, a big free at the top of the heap would otherwise be
    # given back to the kernel (and faulted in again at the next step).
    done = mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1 and mallopt(M_MMAP_MAX, 0) == 1
    if done:
        log.debug("malloc: large blocks from the heap, freed memory kept for reuse")
    return done
