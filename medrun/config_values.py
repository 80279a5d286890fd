"""Typed reads of config values, failing with the key's full name instead of a TypeError."""
from __future__ import annotations

from omegaconf import DictConfig

from medrun.errors import MedrunError


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        if part not in node:
            raise MedrunError(f"config key {key} is missing; add it with +{key}=...")
        node = node[part]
    return node


def get_int(cfg: DictConfig, key: str, minimum: int | None = None, prefix: str = "") -> int:
    """`cfg[key]` as an int; errors name the key as `prefix + key` (the node's path in the full config)."""
    value = _get(cfg, key)
    key = prefix + key
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise MedrunError(f"{key}={value!r} is not an integer; pass e.g. {key}=5") from None
    if minimum is not None and value < minimum:
        raise MedrunError(f"{key}={value} must be at least {minimum}")
    return value


def get_float(cfg: DictConfig, key: str, low: float | None = None, high: float | None = None, prefix: str = "") -> float:
    value = _get(cfg, key)
    key = prefix + key
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MedrunError(f"{key}={value!r} is not a number") from None
    if (low is not None and value <= low) or (high is not None and value >= high):
        raise MedrunError(f"{key}={value} must lie strictly between {low} and {high}")
    return value
