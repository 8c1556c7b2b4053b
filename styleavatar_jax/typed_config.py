"""Config files, --config.* overrides, and ConfigDict <-> the typed, frozen dataclasses
that modules take.

The ConfigDict stops here: `generator_config(cfg.model.generator)` gives a GeneratorConfig,
and an unknown or missing field is an error that names `config.model.generator.<field>`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from styleavatar_jax.models.discriminator import DiscriminatorConfig
from styleavatar_jax.models.triplane import GeneratorConfig
from styleavatar_jax.render.renderer import RenderConfig


def build_dataclass(
    cls, values: Mapping[str, Any], where: str, nested: dict[str, Any] | None = None
):
    values = dict(values.to_dict() if isinstance(values, ml_collections.ConfigDict) else values)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown}; expected a subset of {sorted(names)}"
        )
    for name, sub in (nested or {}).items():
        if name in values:
            values[name] = build_dataclass(sub, values[name], f"{where}.{name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e) if str(e).startswith(where) else f"{where}: {e}") from e


def generator_config(
    values: Mapping[str, Any], where: str = "config.model.generator"
) -> GeneratorConfig:
    return build_dataclass(GeneratorConfig, values, where, {"render": RenderConfig})


def discriminator_config(
    values: Mapping[str, Any], where: str = "config.model.discriminator"
) -> DiscriminatorConfig:
    return build_dataclass(DiscriminatorConfig, values, where)


def as_dict(cfg) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (for a ConfigDict or JSON)."""
    return dataclasses.asdict(cfg)


def load_config_file(spec: str, overrides: list[str] | None = None) -> ml_collections.ConfigDict:
    """'configs/NAME.py[:arg]' -> ConfigDict (get_config(arg)), with --config.* overrides."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config={spec}: no such file {file}")
    module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={spec}: {file} defines no get_config()")
    takes_arg = bool(inspect.signature(module.get_config).parameters)
    if arg and not takes_arg:
        raise ValueError(f"--config={spec}: {file}'s get_config() takes no argument; drop "
                         f"':{arg}' (--config={path})")  # fmt: skip
    try:
        cfg = module.get_config(arg) if arg else module.get_config()
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--config={spec}: {file}'s get_config({arg!r}) failed ({e}); see "
                         f"its docstring for the variants it takes") from e  # fmt: skip
    return apply_overrides(cfg, overrides or [])


def apply_overrides(
    cfg: ml_collections.ConfigDict, overrides: list[str]
) -> ml_collections.ConfigDict:
    """Apply `--config.a.b=value` overrides; the value is parsed as the existing field's type.

    An unknown path is an error naming the flag.
    """
    for item in overrides:
        flag, sep, text = item.partition("=")
        if not flag.startswith("--config.") or not sep:
            raise ValueError(f"{item!r}: expected --config.<path>=<value>")
        path = flag[len("--config.") :].split(".")
        node = cfg
        for part in path[:-1]:
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ValueError(f"{flag}: unknown config key {part!r}")
            node = node[part]
        leaf = path[-1]
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ValueError(f"{flag}: unknown config key {leaf!r}")
        node[leaf] = _parse_like(node[leaf], text, flag)
    return cfg


def _parse_like(old: Any, text: str, flag: str) -> Any:
    if isinstance(old, str):  # a string field takes the text (pose.mode=none is "none")
        return text
    if text.lower() in ("none", "null"):
        return None
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(old, int):
            return int(text)
        if isinstance(old, float):
            return float(text)
        if isinstance(old, (list, tuple)):
            return type(old)(float(v) if "." in v else int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected a {type(old).__name__}") from None
    if old is None:
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
    return text
