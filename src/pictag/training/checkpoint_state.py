"""What a checkpoint's ``state.pt`` may hold, so that ``torch.load(weights_only=True)`` reads it
back: plain values in place of NumPy ones, schedulers without their functions, and the RNG
states of Python, NumPy and torch as lists and tensors."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# What torch.load(weights_only=True) reads back as is (bool is an int, torch.Size a tuple).
_ATOMS = (type(None), int, float, str, bytes, torch.Tensor, torch.Size, torch.dtype, torch.device)


def rng_state() -> dict[str, Any]:
    """The global RNG states, as plain lists and tensors (loadable with weights_only=True)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": np_keys.tolist(),  # uint32 array -> Python ints, restored exactly
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    # Before CUDA is initialised no CUDA random number has been drawn, and reading the state
    # would start a CUDA context for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it off the CPU
    if state.get("cuda") and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def drop_callables(state: Any) -> Any:
    """A scheduler state without functions, which weights_only loading refuses.

    LambdaLR stores each lambda's ``__dict__`` when it is a callable object (which may hold
    functions), and some torch versions keep bound methods (OneCycleLR's ``anneal_func``).
    They are not state: the freshly built scheduler that loads this already has them.
    """
    if isinstance(state, dict):
        return {k: drop_callables(v) for k, v in state.items() if not callable(v)}
    if isinstance(state, list | tuple):
        items = [None if callable(v) else drop_callables(v) for v in state]
        return items if isinstance(state, list) else tuple(items)
    return state


def plain(obj: Any, where: str) -> Any:
    """``obj`` as data that weights_only loading accepts: NumPy values become Python ones.

    Raises:
        TypeError: Something else (a module, a function, a custom class) was found; the
            message names where.
    """
    if isinstance(obj, np.generic | np.ndarray):
        return plain(obj.tolist(), where)
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        kind = list if isinstance(obj, list) else set if isinstance(obj, set) else tuple
        return kind(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"cannot checkpoint {where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be "
        "loaded back safely (torch.load weights_only); store plain numbers, strings, lists, "
        "dicts or tensors"
    )
