"""What Linux's ``/proc/cpuinfo`` says about this CPU: read in one place for the precision a
run trains in (its flags), the machine key of ``--backend auto`` (its name) and ONNX Runtime's
optimised copies (its name and flags)."""

from __future__ import annotations

CPUINFO = "/proc/cpuinfo"


def cpuinfo_fields(cpuinfo: str = CPUINFO) -> dict[str, str]:
    """Field name (lower case) -> the first value given for it (the first processor's); empty
    when the file cannot be read (not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        return {}
    return fields


def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags (``flags`` on x86, ``Features`` on Arm), or an empty
    set when they cannot be read."""
    fields = cpuinfo_fields(cpuinfo)
    return frozenset((fields.get("flags") or fields.get("features") or "").split())
