import ctypes
import os
import platform
import subprocess
import sys

import pytest

from pictag import allocator

GLIBC_LINUX = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
HAS_MALLINFO2 = GLIBC_LINUX and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")

# Bytes of the mmap'd block glibc gives a 64 MB tensor, before and after keep_freed_memory().
CHURN = """
import ctypes, torch
from pictag.allocator import keep_freed_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2

def mapped(megabytes=64):
    tensor = torch.empty(megabytes * 2**18)
    held = libc.mallinfo2().hblkhd
    del tensor
    return held - libc.mallinfo2().hblkhd  # the tensor's own block, not older ones

before = mapped()
print(keep_freed_memory(), before, mapped())
"""
# A process forked after the setting (a DataLoader worker): the free heap it inherits, and
# where its 64 MB blocks come from, beside the parent's. The setting comes before torch
# is imported, as in the commands: glibc's mmap threshold is then still its initial 128 KB.
FORKED = (
    """
import ctypes, os
from pictag import allocator

kept = allocator.keep_freed_memory() and allocator.keep_freed_memory()
hooks = allocator._hook_forked_children.cache_info().misses
"""
    + CHURN[CHURN.index("import ctypes, torch") : CHURN.index("before =")]
    + """
def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))

freed = torch.ones(16 * 2**20)
del freed  # 64 MB touched and freed: the parent keeps the pages
parent = [resident(), mapped()]
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, f"{resident()} {mapped()}".encode())
    os._exit(0)
os.wait()
print(kept, hooks, *parent, os.read(read, 100).decode())
"""
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for name in ("GLIBC_TUNABLES", "LD_PRELOAD", allocator.OPT_OUT):
        env.pop(name, None)
    return env


@pytest.mark.skipif(not HAS_MALLINFO2, reason="glibc >= 2.33 (mallinfo2) only")
def test_large_tensors_come_from_the_heap_once_freed_memory_is_kept():
    done = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, env=_clean_env()
    )
    assert done.returncode == 0, done.stderr
    kept, before, after = done.stdout.split()
    assert kept == "True"
    # glibc's defaults map a 64 MB block afresh each time (its pages faulted in again: see
    # benchmarks/allocator.py); kept, it comes from the heap, where freed blocks are reused.
    assert int(before) >= 64 * 2**20
    assert int(after) == 0


@pytest.mark.skipif(not HAS_MALLINFO2, reason="glibc >= 2.33 (mallinfo2) only")
def test_a_forked_child_gives_back_the_free_heap_and_maps_large_blocks_again():
    done = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, env=_clean_env()
    )
    assert done.returncode == 0, done.stderr
    kept, hooks, parent_rss, parent_mapped, child_rss, child_mapped = done.stdout.split()
    assert kept == "True" and hooks == "1"  # set twice, hooked once
    assert int(parent_mapped) == 0  # the parent serves large blocks from its heap
    # Its child gives back the 64 MB of free heap it inherited (benchmarks/allocator_epochs.py:
    # with 2 workers the peak was 8.0 GB, 4.3-5.8 after) and maps large blocks again.
    assert int(parent_rss) - int(child_rss) >= 48 * 2**20
    assert int(child_mapped) >= 64 * 2**20


def test_a_forked_child_maps_blocks_above_the_adaptive_thresholds_ceiling():
    # Any mallopt of the thresholds turns glibc's adaptation off (ours in the parent did): the
    # child's are set where the adaptation ends at most, so that blocks below 32 MB (decoded
    # images) come from its heap rather than from fresh mmap'd pages each time.
    calls = []
    allocator._release_in_child(lambda *args: calls.append(args), lambda pad: calls.append(pad))
    assert calls == [
        (allocator.M_MMAP_THRESHOLD, 32 * 2**20),
        (allocator.M_TRIM_THRESHOLD, 64 * 2**20),
        (allocator.M_MMAP_MAX, 65536),
        0,  # malloc_trim(0): the free heap inherited from the parent goes back
    ]


@pytest.fixture
def no_settings(monkeypatch):
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    for name in ("GLIBC_TUNABLES", allocator.OPT_OUT):
        monkeypatch.delenv(name, raising=False)
    looked_up: list[object] = []

    def cdll(name):
        looked_up.append(name)
        raise OSError("not in a test")

    monkeypatch.setattr(allocator.ctypes, "CDLL", cdll)
    return looked_up


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's malloc only")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_ARENA_MAX", "2"),
        ("MALLOC_PERTURB_", "0"),
        ("MALLOC_TOP_PAD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_max=65536"),
        ("PICTAG_KEEP_FREED_MEMORY", "0"),
    ],
)
def test_the_users_malloc_settings_and_the_opt_out_are_kept(monkeypatch, no_settings, name, value):
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False
    assert no_settings == []  # the C library was not even opened


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's malloc only")
def test_other_tunables_do_not_count_as_malloc_settings(monkeypatch, no_settings):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    allocator.keep_freed_memory()
    assert no_settings == [None]  # it went on to open the process's C library


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's malloc only")
def test_an_interposed_allocator_gets_no_glibc_options(monkeypatch, no_settings):
    calls = []

    class Library:
        def __init__(self, name):
            self.malloc = "jemalloc's" if name is None else "glibc's"
            self.mallopt = lambda *args: calls.append(args) or 1

    monkeypatch.setattr(allocator.ctypes, "CDLL", Library)
    monkeypatch.setattr(allocator, "_address", lambda function: function)
    assert allocator.keep_freed_memory() is False
    assert calls == []


@pytest.mark.parametrize("where", ["darwin", "musl"])
def test_nothing_is_set_off_glibc(monkeypatch, no_settings, where):
    if where == "darwin":
        monkeypatch.setattr(allocator.sys, "platform", "darwin")
    else:
        monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False
    assert no_settings == []
