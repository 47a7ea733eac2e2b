"""Plain data (as YAML gives it) -> typed, range-checked dataclasses, with errors that name the key.

Nothing here knows pictag's sections: :mod:`pictag.config` and :mod:`pictag.config_train`
declare them (fields made with :func:`setting`: a description and ``gt``/``ge``/``lt``/``le``
limits as metadata) and call these helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

LIMITS = {  # field metadata key -> (test, sign in messages); config_schema maps the same keys
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def build(cls: type, raw: Any, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from a mapping, each value coerced to its field's
    type; unknown keys and wrong types raise :class:`ConfigError` naming ``where.key``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key {key!r}; valid keys here: {', '.join(names)}")
    values = {k: coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**values)


def coerce(hint: Any, value: Any, key: str) -> Any:
    """``value`` as the type ``hint`` (unions, dataclasses, lists, dicts, scalars)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return build(hint, value or {}, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads 5e-4 (no dot) as a string; Python's float() reads it as meant.
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number; got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, bool):
            return "on" if value else "off"  # YAML 1.1 reads `amp: off` as false
        if isinstance(value, (str, int, float)):
            return str(value)  # labels such as 1 or 2010 arrive from YAML as numbers
    else:
        return value
    raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")


def check_fields(
    section: Any, where: str, pattern: str, choices: Mapping[str, tuple[str, ...]]
) -> None:
    """Each field of one section within its metadata limits and, where ``choices`` lists the
    field as ``pattern.field``, one of its choices."""
    for item in dataclasses.fields(section):
        key, value = f"{where}.{item.name}", getattr(section, item.name)
        limits = [(k, v) for k, v in item.metadata.items() if k in LIMITS]
        if value is not None and not all(LIMITS[k][0](value, v) for k, v in limits):
            rule = " and ".join(f"{LIMITS[k][1]} {v}" for k, v in limits)
            raise ConfigError(f"{key}: must be {rule}; got {value!r}")
        allowed = choices.get(f"{pattern}.{item.name}")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)}; got {value!r}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhd]))+$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``90``, ``90s``, ``5m``, ``1.5h`` or ``1h30m``.

    Raises:
        ValueError: Not a positive duration; the message gives examples.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            seconds = float(value)
        elif _DURATION.match(value):
            parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", value)
            seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
        else:
            seconds = -1.0
    if seconds == 0:
        raise ValueError(f"{text!r} is no time at all; use e.g. 90s, 5m, or off for no budget")
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 5m, 1h30m, auto or off")
    return seconds


def setting(default: Any, doc: str, **limits: float) -> Any:
    """A dataclass field with its description and numeric limits as metadata.

    Args:
        default: The default value; a class (``list``, ``dict``, a section) is a default factory.
        doc: One-line description, shown by editors through the JSON Schema.
        **limits: ``gt``, ``ge``, ``lt``, ``le`` bounds, checked when a config is loaded.
    """
    metadata = {"doc": doc, **limits}
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
