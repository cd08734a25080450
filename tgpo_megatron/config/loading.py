"""Reading recipes: YAML with ``base:`` inheritance, dotted command-line overrides, typed conversion.

    cfg = load_config("examples/recipes/tiny_cpu.yaml", ["algorithm.name=grpo", "trainer.steps=20"])

A recipe may start with ``base: other.yaml`` (a path relative to the recipe) whose keys it overrides.
Unknown keys and values of the wrong type are errors naming the dotted key (and the closest known key),
never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Optional

import yaml

from tgpo_megatron.config.sections import Config, ConfigError, sections


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML follows YAML 1.1, where `1e-6` (no dot) is a string; everyone writes learning rates that way
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    return value


def _build(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r}{hint}; known keys of {prefix or 'the config'}: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix}: {e}" if prefix else str(e)) from None


def from_dict(cls, values: dict, prefix: str = ""):
    """A typed dataclass from a mapping, with the checks of a recipe section (unknown keys, types, ranges)."""
    return _build(cls, values, prefix)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_recipe(path: str, _seen: Optional[set] = None) -> dict:
    """The raw mapping of a recipe, with its ``base:`` chain merged in."""
    path = os.path.abspath(path)
    seen = _seen or set()
    if path in seen:
        raise ConfigError(f"{path}: recipe inherits from itself through 'base'")
    if not os.path.isfile(path):
        raise ConfigError(f"recipe not found: {path}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _merge(read_recipe(os.path.join(os.path.dirname(path), base), seen | {path}), raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``3``, ``1e-6``, ``[a, b]``, ``null``)."""
    raw = _merge({}, raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    return raw


def config_from_dict(raw: dict) -> Config:
    known = sections()
    built = {}
    for name, values in raw.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown config section {name!r}{hint}; sections: {', '.join(known)}")
        built[name] = _build(known[name], values or {}, name)
    return Config(**built)


def load_config(path: Optional[str], overrides: Optional[list[str]] = None) -> Config:
    raw = read_recipe(path) if path else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def save_config(config: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
