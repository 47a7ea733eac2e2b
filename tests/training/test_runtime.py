import torch

from pictag.training.runtime import choose_amp_dtype, setup_runtime


def test_explicit_amp_choices():
    cpu = torch.device("cpu")
    assert choose_amp_dtype(cpu, "off") is None
    assert choose_amp_dtype(cpu, "bf16") is torch.bfloat16
    assert choose_amp_dtype(cpu, "fp16") is torch.float16


def test_auto_on_cpu_uses_bf16_only_when_the_probe_says_it_is_fast(monkeypatch):
    import pictag.training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_bf16_is_fast", lambda: False)
    assert choose_amp_dtype(torch.device("cpu"), "auto") is None
    monkeypatch.setattr(runtime, "cpu_bf16_is_fast", lambda: True)
    assert choose_amp_dtype(torch.device("cpu"), "auto") is torch.bfloat16


def test_single_process_runtime_on_cpu():
    rt = setup_runtime("cpu", "off")
    assert rt.device.type == "cpu"
    assert rt.world_size == 1 and rt.is_main and not rt.distributed
    with rt.autocast():
        assert torch.ones(1).dtype == torch.float32
