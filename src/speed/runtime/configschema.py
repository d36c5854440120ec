"""Typed dict -> dataclass conversion with errors that name the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import ConfigError

_MISSING = object()


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin in (list, tuple):
        (inner,) = get_args(tp)[:1] or (Any,)
        return f"a list of {_describe(inner)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` checked against type ``tp``; raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for alt in args:
            if alt is type(None):
                continue
            try:
                return _coerce(value, alt, where)
            except ConfigError:
                continue
        raise ConfigError(f"config error: {where} = {value!r} is not allowed: expected {_describe(tp)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"config error: {where} = {value!r} is not allowed: expected {_describe(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config error: {where} = {value!r} is not allowed: expected {_describe(tp)}")
        (inner,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config error: {where} = {value!r} is not allowed: expected a mapping")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config error: {where} = {value!r} is not allowed: expected {_describe(tp)}")


def from_dict(cls: type, data: Any, where: str):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and ill-typed values.

    After construction, ``cls.validate(self, where)`` (if defined) checks ranges and cross-field rules.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {where} = {data!r} is not allowed: expected {_describe(cls)}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"config error: unknown key '{where}.{key}' (allowed: {', '.join(sorted(names))}){hint}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    for f in dataclasses.fields(cls):
        if f.init and f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config error: missing key '{where}.{f.name}' ({_describe(hints[f.name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def check(cond: bool, where: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError unless ``cond``: 'config error: WHERE = VALUE is not allowed: ALLOWED'."""
    if not cond:
        raise ConfigError(f"config error: {where} = {value!r} is not allowed: {allowed}")


__all__ = ["from_dict", "to_dict", "check", "typing"]
