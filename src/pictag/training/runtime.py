"""Where and how training runs: device, mixed precision, seeds, and torchrun's process group."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import distribute_bn

from pictag.cpuinfo import cpu_flags
from pictag.evaluation.inference import check_cuda_device


@dataclass(frozen=True)
class Runtime:
    """The device, precision and distributed rank of this process.

    Attributes:
        device: Where the model and batches live.
        amp_dtype: ``torch.bfloat16``/``torch.float16`` for autocast, or None for fp32.
        rank: Global rank under torchrun (0 otherwise).
        world_size: Number of processes (1 without torchrun).
        local_rank: Rank on this machine, which picks the GPU.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints progress."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def process_rank() -> int:
    """This process's rank under torchrun (0 when run alone), readable before
    :func:`setup_runtime` joins the process group."""
    return int(os.environ.get("RANK", "0"))


def setup_runtime(device: str = "auto", amp: str = "auto", threads: int | None = None) -> Runtime:
    """Pick the device, precision and CPU threads; join the process group under torchrun.

    Under torchrun (``WORLD_SIZE`` > 1) the backend is nccl on GPUs and gloo on CPUs.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: ``train.amp``.
        threads: torch's intra-op threads; 0: :func:`default_threads`; None: leave as it is.
    """
    if threads is not None:
        torch.set_num_threads(threads or default_threads())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = process_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and device != "auto":
        check_cuda_device(torch.device(device))
    if use_cuda:
        index = local_rank if device in ("auto", "cuda") else torch.device(device).index or 0
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    amp_dtype = choose_amp_dtype(dev, amp)
    if world_size > 1:
        amp_dtype = _rank0_choice(amp_dtype, dev)  # ranks on different machines may differ
    return Runtime(dev, amp_dtype, rank, world_size, local_rank)


def default_threads() -> int:
    """The CPUs this process may use (its affinity mask and the container's CPU quota),
    shared among the processes torchrun starts on this machine.

    torch's own default counts the machine's physical cores, so a process limited to fewer
    (``taskset``, a container quota) or sharing them with other ranks runs more threads than
    CPUs, and each kernel waits on its slowest, descheduled thread.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = min(cpus or 1, _cgroup_cpu_quota() or cpus or 1)
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cpus // max(per_machine, 1))


def _cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The CPUs a cgroup v2 quota allows (``quota period``, rounded up), or None."""
    try:
        with open(path, encoding="ascii") as file:
            quota, period = file.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def _rank0_choice(amp_dtype: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    options = (None, torch.bfloat16, torch.float16)
    code = torch.tensor([options.index(amp_dtype)], device=device)
    dist.broadcast(code, src=0)
    return options[int(code.item())]


def choose_amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for ``train.amp``.

    ``auto`` uses bf16 on GPUs that support it (fp16 otherwise) and, on a CPU, bf16 only when
    the CPU's flags say it computes bf16 natively (:func:`cpu_native_bf16`). The choice comes
    from the flags, never from timing: a timing race on a busy machine answered differently
    from call to call, so two ``deterministic`` runs (or a run and its resumption) could train
    in different precisions.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_native_bf16() else None


# CPU flags of native bf16 arithmetic: x86 AVX512-BF16 / AMX (Cooper Lake, Sapphire Rapids,
# Zen 4 and later), Arm's BF16 extension (Graviton 3, Neoverse V1/N2). Without them bf16
# autocast emulates bf16 in fp32 and measured 5-30x slower than fp32 on such CPUs.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively, from its flags (Linux ``/proc/cpuinfo``: the
    ``flags`` line on x86, ``Features`` on Arm). Elsewhere (no such file): False, fp32."""
    return bool(BF16_FLAGS & cpu_flags(cpuinfo))


def precision_text(runtime: Runtime, amp: str) -> str:
    """The precision the run computes in and why, e.g. ``fp32 (CPU without native bf16)``."""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(runtime.amp_dtype, "fp32")
    if amp != "auto":
        return f"{name} (train.amp={amp})"
    if runtime.device.type == "cuda":
        return f"{name} (GPU)"
    native = "with" if runtime.amp_dtype else "without"
    return f"{name} (CPU {native} native bf16)"


def amp_setting(amp_dtype: torch.dtype | None) -> str:
    """The ``train.amp`` value that gives ``amp_dtype`` on any machine (stored in a run, so a
    resumed run computes in the precision it started with)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "off")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's random streams in one epoch.

    Reseeding each epoch from ``(seed, epoch, rank)`` alone lets a resumed run draw what the
    uninterrupted one drew, on every rank: a checkpoint holds only rank 0's RNG states.
    """
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank]).generate_state(1)[0])


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum a tensor over all ranks (a no-op in one process)."""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(module: torch.nn.Module, runtime: Runtime) -> None:
    """Give every rank rank 0's parameters and buffers (a no-op in one process).

    Each rank seeds its RNG with ``seed + rank`` (so augmentations differ), which also makes
    freshly built models differ; DistributedDataParallel syncs them only when it wraps the model,
    too late for an EMA copy or the linear probe's heads made before that.
    """
    if runtime.distributed:
        for tensor in module.state_dict().values():  # detached views: in place updates the module
            dist.broadcast(tensor, src=0)


def average_batchnorm_stats(modules: list[torch.nn.Module | None], runtime: Runtime) -> None:
    """Average BatchNorm running statistics over ranks (a no-op in one process), as timm's
    train script does after each epoch: each rank's statistics followed only its own shard."""
    if runtime.distributed:
        for module in modules:
            if module is not None:
                distribute_bn(module, runtime.world_size, reduce=True)


def cleanup(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
