"""Raw configuration data (as read from YAML) edited before it is built into a
:class:`pictag.config.Config`: ``--set`` overrides, relative paths made absolute against the
config file's folder, and the short forms expanded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pictag.config_parse import ConfigError


def set_key(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override (value parsed as YAML) to raw config data."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: {text!r} is not a valid YAML value ({err})") from None
    set_raw(raw, key.strip(), value)


def set_raw(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` of raw config data to ``value``, making sections on the way."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, str) and part == parts[1] and parts[0] == "heads":
            child = node[part] = {"kind": child}  # `heads.tags=multilabel` set earlier
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def refines_heads(overrides: list[str]) -> bool:
    """Whether an override sets a key inside a named head (``heads.age.bins=...``)."""
    keys = [item.partition("=")[0].strip().split(".") for item in overrides]
    return any(len(parts) > 2 and parts[0] == "heads" for parts in keys)


def resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative data paths and heads' mask folders made absolute against ``base`` (the
    config file's folder), in place."""
    heads = raw.get("heads")
    for head in heads.values() if isinstance(heads, dict) else ():
        if isinstance(head, dict) and isinstance(head.get("masks"), str):
            head["masks"] = os.path.normpath(base / head["masks"])  # a segmentation head's folder
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("labels", "split_file"):
        if isinstance(data.get(key), str):
            data[key] = os.path.normpath(base / data[key])
    images = data.get("images")
    if isinstance(images, str):
        data["images"] = os.path.normpath(base / images)
    elif isinstance(images, list):
        data["images"] = [os.path.normpath(base / p) if isinstance(p, str) else p for p in images]


def shorthands(raw: dict[str, Any]) -> dict[str, Any]:
    """Short forms expanded: ``heads: {tags: multilabel}`` and one ``data.images`` folder."""
    raw = dict(raw)
    if isinstance(raw.get("heads"), dict):
        raw["heads"] = {
            name: {"kind": head} if isinstance(head, str) else head
            for name, head in raw["heads"].items()
        }
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("images"), str):
        raw["data"] = {**data, "images": [data["images"]]}  # one image folder: the common case
    return raw
