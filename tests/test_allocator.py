import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pictag import allocator

GLIBC_LINUX = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Faults of three 64 MB tensors filled and freed, before and after the CPU runtime is set up.
CHURN = """
import resource, torch
from pictag.training.runtime import setup_runtime

def faults():
    def churn():
        tensor = torch.empty(16 * 2**20)
        tensor.fill_(1.0)
        del tensor
    churn()
    churn()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        churn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
setup_runtime("cpu", "off")
print(before, faults())
"""


def _thp_always() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.is_file() and "[always]" in path.read_text()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("LD_PRELOAD", None)
    return env


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's malloc only")
def test_cpu_runtime_reuses_freed_tensor_memory_without_page_faults():
    done = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, env=_clean_env()
    )
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    # glibc's defaults map each 64 MB block afresh: 16,384 faults of 4 KB pages a block.
    if not _thp_always():  # with huge pages everywhere the default faults 512x less
        assert before > 10_000
    assert after < 1_000


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc's malloc only")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_MMAP_MAX_", "65536"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_max=65536"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ],
)
def test_the_users_allocator_settings_are_kept(monkeypatch, name, value):
    for variable in (*allocator.USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(variable, raising=False)
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda _: calls.append(1))
    monkeypatch.setenv(name, value)
    assert allocator.keep_freed_memory() is False
    assert calls == []  # mallopt was not even looked up


def test_nothing_is_set_off_glibc(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
