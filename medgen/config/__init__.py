"""YAML configs mirrored one to one by typed dataclasses.

- `load_config(Cls, "configs/x.yaml", ["train.lr=1e-4"])` reads YAML, applies `a.b=value` overrides
  and builds the dataclass, checking every key and type on the way.
- An unknown key is an error naming the key and the closest valid one.
- `save_config(cfg, path)` writes the resolved config (every field, defaults included) so a run can be
  reproduced from its own `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from medgen.errors import ConfigError

class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `amp: off` or `norm: no` as booleans."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


__all__ = ["load_config", "save_config", "from_dict", "to_dict", "apply_overrides", "parse_override"]


def _closest(name: str, choices) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid keys: " + ", ".join(sorted(choices))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is loose (int -> float...)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"'{where}': bad value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"'{where}' must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"'{where}' must have {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{where}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{where}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{where}' must be a string, got {value!r}")
    return value


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown config key '{_join(prefix, key)}': {_closest(key, fields)}")
    kwargs = {name: _coerce(value, hints[name], _join(prefix, name)) for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field without default was not given
        raise ConfigError(f"'{prefix or cls.__name__}': {exc}") from None
    _check_learning_rates(obj, prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


# A learning rate is named `lr`, `<network>_lr` (encoder_lr) or `lr_<network letter>` (lr_d); `lr_decay`,
# `lr_decay_every`, `lr_decay_fraction` are schedule settings, checked for finiteness only.
_LEARNING_RATE = re.compile(r"(?:\w+_)?lr(?:_[a-z])?")


def _check_learning_rates(obj, prefix: str) -> None:
    """Every number in an `lr` field must be finite and every learning rate > 0.

    Checked here, once for all pipelines, so a bad value is a ConfigError naming the field before any
    training starts: torch's optimisers reject NaN only at construction (a bare ValueError without the
    field's name), and accept +inf, a negative or a zero rate, which then train nothing or diverge.
    """
    for f in dataclasses.fields(obj):
        if "lr" not in f.name.split("_"):
            continue
        value = getattr(obj, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        where = _join(prefix, f.name)
        if not math.isfinite(value):
            raise ConfigError(f"'{where}' must be a finite number, got {value!r}")
        if _LEARNING_RATE.fullmatch(f.name) and value <= 0:
            raise ConfigError(f"'{where}' is a learning rate and must be > 0, got {value!r}")


def to_dict(obj) -> Any:
    """A dataclass tree as plain YAML-friendly Python (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 1e-4). The value is read as YAML ('[64,64,64]', 'true')."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides, cls=None) -> dict:
    """Apply `a.b=value` strings to a nested dict. With `cls`, keys are checked against the dataclass."""
    data = dict(data or {})
    for text in overrides or ():
        path, value = parse_override(text)
        node, node_cls = data, cls
        for depth, key in enumerate(path):
            where = ".".join(path[: depth + 1])
            if node_cls is not None:
                names = {f.name for f in dataclasses.fields(node_cls)}
                if key not in names:
                    raise ConfigError(f"unknown config key '{where}' in override '{text}': {_closest(key, names)}")
                sub_tp = get_type_hints(node_cls)[key]
                node_cls = sub_tp if dataclasses.is_dataclass(sub_tp) else None
            if depth == len(path) - 1:
                node[key] = value
            else:
                child = node.get(key)
                child = dict(child) if isinstance(child, dict) else {}
                node[key] = child
                node = child
    return data


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def load_config(cls, path=None, overrides=()):
    """Read `path` (optional), apply overrides, build and validate `cls`."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides, cls)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def save_config(obj, path) -> None:
    from medgen.files import atomic_write

    atomic_write(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
