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
import functools
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

# mallopt's parameter numbers, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# A forked child's limits: where glibc's adaptive ones end up at most (mmap above 32 MB on 64-bit,
# trim above twice that), since any mallopt of them, ours included, turns the adaptation off;
# and glibc's default count of mmap'd blocks.
CHILD_MMAP_THRESHOLD = 32 * 2**20
CHILD_TRIM_THRESHOLD = 2 * CHILD_MMAP_THRESHOLD
DEFAULT_MMAP_MAX = 65536
# The largest value mallopt takes (a C int): up to 2 GB free at the top of the heap stays.
KEEP_BYTES = 2**31 - 1
OPT_OUT = "PICTAG_KEEP_FREED_MEMORY"  # 0: leave glibc's malloc as it is


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from the heap and keep freed ones for reuse, for
    the rest of the process (it cannot be undone: glibc's dynamic mmap threshold stays off).

    ``pictag train``, ``lr-find`` and ``audit`` call it; a program that trains through the
    Python API may call it first to get the same speed.

    Returns:
        Whether the setting was made: not off Linux with glibc, with ``PICTAG_KEEP_FREED_MEMORY=0``,
        where the user has set glibc's malloc options (``MALLOC_*`` variables or
        ``glibc.malloc`` tunables), or where another allocator serves ``malloc`` (preloaded
        jemalloc, TCMalloc, mimalloc: they have no such cost).
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get(OPT_OUT, "1") == "0" or _user_malloc_settings():
        return False
    try:
        process, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6")
        if _address(process.malloc) != _address(libc.malloc):
            return False  # another allocator is interposed: glibc's options would do nothing
        mallopt, _ = _malloc_functions(libc)
    except (OSError, AttributeError):
        return False
    done = mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1 and mallopt(M_MMAP_MAX, 0) == 1
    if done:
        log.debug("malloc: large blocks from the heap, freed memory kept for reuse")
        _hook_forked_children()
    return done


@functools.cache  # one hook per process, however often the setting is made
def _hook_forked_children() -> None:
    mallopt, trim = _malloc_functions(ctypes.CDLL("libc.so.6"))  # looked up here, not in the child
    os.register_at_fork(after_in_child=functools.partial(_release_in_child, mallopt, trim))


def _release_in_child(mallopt: ctypes._CFuncPtr, trim: ctypes._CFuncPtr) -> None:
    """In a forked child (a DataLoader worker, say): large blocks mmap'd and the top of the heap
    trimmed again, and the free heap it inherited given back. A worker that kept its freed
    memory held it all epoch on top of the parent's: with 2 workers on oxford-pets-3 the
    processes' peak rose from 4.7 to 8.0 GB (``benchmarks/allocator_epochs.py``), and reusing the
    parent's free pages copies them."""
    mallopt(M_MMAP_THRESHOLD, CHILD_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, CHILD_TRIM_THRESHOLD)
    mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    trim(0)


def _malloc_functions(libc: ctypes.CDLL) -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:
    """glibc's ``mallopt`` and ``malloc_trim``, with their C types."""
    mallopt, trim = libc.mallopt, libc.malloc_trim
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return mallopt, trim


def _user_malloc_settings() -> bool:
    """Whether glibc's malloc was configured by the user: any ``MALLOC_`` variable (glibc reads
    ``MALLOC_ARENA_MAX``, ``MALLOC_TOP_PAD_``, ``MALLOC_PERTURB_``, ...) or tunable."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def _address(function: ctypes._CFuncPtr) -> int | None:
    return ctypes.cast(function, ctypes.c_void_p).value
