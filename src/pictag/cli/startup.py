"""What the ``pictag`` command does before its subcommand runs, to start quickly."""

from __future__ import annotations

import gc
import importlib
import sys


def import_torch_frozen() -> None:
    """Import torch and torchvision with the garbage collector off, then freeze what they made
    and turn the collector back on; nothing when torch is imported already (a second call, or
    a caller in a process that has it, such as a test).

    Their imports make ~530,000 objects that live as long as the process, and the collector,
    set off by every 700 new ones, walks the whole growing heap again and again on the way
    (5-6 full collections, 0.5-0.8 s). Frozen, later collections skip them too. What the
    imports leave as garbage in reference cycles stays (~7 MB beside torch's ~680 MB).
    """
    if "torch" in sys.modules:
        return
    gc.disable()
    try:
        for name in ("torch", "torchvision"):
            importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()
