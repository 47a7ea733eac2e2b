"""JSON Schema of a pictag YAML config, for editors that complete and check ``pictag.yaml``.

Built from the dataclasses of :mod:`pictag.config`: each field's type, default, description and
limits (field metadata), and the choices in :data:`pictag.config.CHOICES`. Point an editor at
the output of ``pictag config --schema``, e.g. with the first line
``# yaml-language-server: $schema=pictag.schema.json``. The schema describes what the loader
accepts, so it also allows the shorthands (``heads: {tags: multilabel}``, one ``data.images``
folder as a string); kind-specific rules stay with :mod:`pictag.heads` and are not in it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from pictag.config import CHOICES, Config, HeadConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_KEYWORDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def config_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a whole config file; every section forbids unknown keys."""
    header = {"$schema": SCHEMA_DIALECT, "title": "pictag config", "description": Config.__doc__}
    return header | _section(Config, "")


def _section(cls: type, where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties = {}
    for item in dataclasses.fields(cls):
        key = f"{where}.{item.name}" if where else item.name
        prop = _type(hints[item.name], key)
        factory = item.default_factory
        default = item.default if factory is dataclasses.MISSING else factory()
        if not dataclasses.is_dataclass(default):  # a section's defaults sit on its own fields
            prop["default"] = default
        prop.update({_KEYWORDS[k]: v for k, v in item.metadata.items() if k in _KEYWORDS})
        if key in CHOICES:
            prop["enum"] = list(CHOICES[key])
        properties[item.name] = {"description": item.metadata["doc"], **prop}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _type(hint: Any, key: str) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (option,) = [a for a in args if a is not type(None)]  # only `X | None` in the config
        schema = _type(option, key)
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        return schema
    if hint is HeadConfig:
        shorthand = {"type": "string", "description": "just the head kind, e.g. multilabel"}
        return {"anyOf": [_section(HeadConfig, "heads.*"), shorthand]}
    if dataclasses.is_dataclass(hint):
        return _section(hint, key)
    if origin is list:
        array = {"type": "array", "items": _item(args[0])}
        if key == "data.images":  # the loader takes one folder as a plain string too
            return {"anyOf": [array, {"type": "string"}]}
        return array
    if origin is dict:
        return {"type": "object", "additionalProperties": _item(args[1])}
    return {"type": _TYPES[hint]}


def _item(hint: Any) -> dict[str, Any]:
    # Labels such as 0 or 2010 arrive from YAML as numbers; the loader makes them strings.
    return {"type": ["string", "number"]} if hint is str else _type(hint, "")
