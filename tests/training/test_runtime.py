import random
import time
from types import SimpleNamespace

import pytest
import torch

from pictag.training.runtime import (
    Runtime,
    amp_setting,
    choose_amp_dtype,
    cpu_native_bf16,
    precision_text,
    setup_runtime,
)


def test_explicit_amp_choices():
    cpu = torch.device("cpu")
    assert choose_amp_dtype(cpu, "off") is None
    assert choose_amp_dtype(cpu, "bf16") is torch.bfloat16
    assert choose_amp_dtype(cpu, "fp16") is torch.float16


def test_auto_on_cpu_uses_bf16_only_when_the_cpu_flags_say_it_is_native(monkeypatch):
    import pictag.training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_native_bf16", lambda: False)
    assert choose_amp_dtype(torch.device("cpu"), "auto") is None
    monkeypatch.setattr(runtime, "cpu_native_bf16", lambda: True)
    assert choose_amp_dtype(torch.device("cpu"), "auto") is torch.bfloat16


def test_auto_precision_does_not_depend_on_how_busy_the_machine_is(monkeypatch):
    """A busy machine makes any timing come out at random: the choice must not follow it."""
    import pictag.training.runtime as runtime

    clock = random.Random(0)
    monkeypatch.setattr(runtime, "time", SimpleNamespace(perf_counter=clock.random), raising=False)
    monkeypatch.setattr(time, "perf_counter", clock.random)
    choices = {choose_amp_dtype(torch.device("cpu"), "auto") for _ in range(40)}
    assert len(choices) == 1


X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    ("text", "native"), [(X86_AVX2, False), (X86_BF16, True), (ARM_BF16, True), ("", False)]
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_native_bf16(str(cpuinfo)) is native
    assert cpu_native_bf16(str(tmp_path / "no-such-file")) is False  # not Linux: fp32


def test_precision_text_says_what_and_why():
    cpu = Runtime(torch.device("cpu"))
    assert precision_text(cpu, "auto") == "fp32 (CPU without native bf16)"
    assert precision_text(Runtime(torch.device("cpu"), torch.bfloat16), "auto") == (
        "bf16 (CPU with native bf16)"
    )
    assert precision_text(cpu, "off") == "fp32 (train.amp=off)"
    assert [amp_setting(d) for d in (None, torch.bfloat16, torch.float16)] == [
        "off",
        "bf16",
        "fp16",
    ]


def test_single_process_runtime_on_cpu():
    rt = setup_runtime("cpu", "off")
    assert rt.device.type == "cpu"
    assert rt.world_size == 1 and rt.is_main and not rt.distributed
    with rt.autocast():
        assert torch.ones(1).dtype == torch.float32


def test_threads_setting_sets_torchs_threads_and_zero_means_the_cpus_we_may_use(monkeypatch):
    import pictag.training.runtime as runtime

    before = torch.get_num_threads()
    try:
        setup_runtime("cpu", "off", threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(runtime, "default_threads", lambda: 2)
        setup_runtime("cpu", "off", threads=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_default_threads_follows_affinity_quota_and_ranks_per_machine(monkeypatch, tmp_path):
    import pictag.training.runtime as runtime

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(runtime, "_cgroup_cpu_quota", lambda: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.default_threads() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # three ranks share the machine's 8 CPUs
    assert runtime.default_threads() == 2
    monkeypatch.setattr(runtime, "_cgroup_cpu_quota", lambda: 1)  # a container allows one CPU
    assert runtime.default_threads() == 1


def test_cgroup_quota_is_read_rounded_up_and_max_means_none(tmp_path):
    from pictag.training.runtime import _cgroup_cpu_quota

    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert _cgroup_cpu_quota(str(quota)) == 2
    quota.write_text("max 100000\n")
    assert _cgroup_cpu_quota(str(quota)) is None
    assert _cgroup_cpu_quota(str(tmp_path / "missing")) is None
