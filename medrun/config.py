"""Hydra composition of the packaged configs, with user mistakes turned into one-line errors."""
from __future__ import annotations

import difflib
import re
import warnings
from importlib.resources import files
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from medrun.errors import MedrunError

CONFIG_DIR = Path(str(files("medrun.configs")))
# Nodes whose keys are a library's keyword arguments: the library itself rejects a wrong one.
PASSED_ON = ("trainer.", "task.optimizer.", "task.scheduler.", "task.loss.", "hydra.")
_ABSENT = object()


def groups() -> list[str]:
    """The train config groups (configs/reproduce/ holds paper tables, not train options)."""
    return sorted(p.name for p in CONFIG_DIR.iterdir()
                  if p.is_dir() and not p.name.startswith("_") and p.name != "reproduce")


def options(group: str) -> list[str]:
    """Config names a user can pick in a group, e.g. options('experiment'); `_name` files are shared bases."""
    folder = CONFIG_DIR / group
    if not folder.is_dir():
        raise MedrunError(f"unknown config group {group!r}; valid: {', '.join(groups())}")
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def describe(group: str, option: str, width: int = 110) -> str:
    """The first sentence of an option's leading comment (configs/<group>/<option>.yaml), at most `width` long."""
    text = []
    for line in (CONFIG_DIR / group / f"{option}.yaml").read_text().splitlines():
        if not line.startswith("#") or (text and text[-1].endswith(".")):
            break
        if "@package" not in line:
            text.append(line.lstrip("# ").strip())
    first = re.split(r"(?<=\.)\s(?=[A-Z])", " ".join(text), maxsplit=1)[0]  # not at "ch. 2" or "e.g. x"
    return first if len(first) <= width else first[:width - 3].rsplit(" ", 1)[0] + "..."


def check_choices(overrides: list[str]) -> None:
    """Unknown group choices (experiment=foo) fail here with the list of valid names."""
    known = set(groups())
    for o in overrides:
        key, sep, value = o.lstrip("+~").partition("=")
        key = key.removeprefix("override ").strip()
        if not sep or key not in known:
            continue
        chosen = value.strip("[]").split(",") if value.startswith("[") else [value]  # logger=[csv,mlflow]
        for name in (c.strip() for c in chosen):
            if name not in ("", "null") and not (CONFIG_DIR / key / f"{name}.yaml").is_file():
                raise MedrunError(f"unknown {key} {name!r}; valid: {', '.join(options(key))}")


def compose(command: str = "train", overrides: list[str] | tuple = (), required: bool = True) -> DictConfig:
    """Compose configs/<command>.yaml with Hydra overrides; the result also records the overrides. required=False
    leaves required values (???) unset instead of failing, for what only reads other parts of the config."""
    overrides = list(overrides)
    check_choices(overrides)
    try:
        cfg = _hydra_compose(command, overrides)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        unknown = re.search(r"Could not override '([^']+)'", msg)
        if unknown:
            key = unknown.group(1)
            msg = _unknown_setting(key, _base(command, overrides)) + (
                f" (+{key}=... passes it on to the library as it is)" if key.startswith(PASSED_ON) else "")
        raise MedrunError(f"bad override: {msg}") from None
    _check_added(command, overrides)
    return finish(cfg, overrides, required)


def _hydra_compose(name: str, overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a job of `medrun reproduce`)
        return hydra_compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")  # a group option alone
        return hydra_compose(config_name=name, overrides=overrides)


def _is_group(key: str) -> bool:
    return "/" in key or key in groups()


def _base(command: str, overrides: list[str]) -> DictConfig:
    """The config the chosen options declare, before any value override."""
    return _hydra_compose(command, [o for o in overrides if _is_group(override_key(o))])


def override_key(override: str) -> str:
    """The key an override sets: `+cv.folds=3` -> cv.folds."""
    return override.lstrip("+~").partition("=")[0].removeprefix("override ").strip()


def _check_added(command: str, overrides: list[str]) -> None:
    """`+key=value` for a key no chosen option declares would be silently ignored (Hydra's own advice for an
    unknown key is to add it with +): refuse it unless a library receives it as a keyword argument. `++key`
    stays the deliberate way to set a key only some jobs of a sweep read (++oversample.epochs=50)."""
    added = [o for o in overrides if o.startswith("+") and not o.startswith("++")
             and not _is_group(override_key(o)) and not override_key(o).startswith(PASSED_ON)]
    if not added:
        return
    base = _base(command, overrides)
    for override in added:
        key = override_key(override)
        if _select(base, key) is _ABSENT:
            raise MedrunError(f"bad override {override}: nothing reads it; {_unknown_setting(key, base)}")


def _select(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)


def _unknown_setting(key: str, base: DictConfig) -> str:
    """One line about a key the composed config lacks: the options of its group that have it (cv.folds:
    cv=kfold, cv=repeated_kfold), else the closest name, else the keys that are there."""
    parts = key.split(".")
    depth = 0
    while depth < len(parts) - 1 and isinstance(_select(base, ".".join(parts[:depth + 1])), DictConfig):
        depth += 1
    missing, parent, name = ".".join(parts[:depth + 1]), ".".join(parts[:depth]), parts[depth]
    if depth == 1 and parent in groups():
        having = [f"{parent}={o}" for o in options(parent)
                  if _select(_hydra_compose(f"{parent}/{o}", []), missing) is not _ABSENT]
        if having:
            verb = "has" if len(having) == 1 else "have"
            return f"{missing} is not a setting of the chosen {parent}; {', '.join(having)} {verb} it"
    node = _select(base, parent) if parent else base
    names = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"{missing} is not a setting: did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f"{missing} is not a setting ({parent or 'the config'} has: {', '.join(names) or 'nothing'})"


def finish(cfg: DictConfig, overrides: list[str], required: bool = True) -> DictConfig:
    """A composed config checked for required keys and carrying its command-line overrides."""
    missing = sorted(OmegaConf.missing_keys(cfg)) if required else []
    if missing:
        raise MedrunError(f"{missing[0]} is required: pass {missing[0]}=...")
    with open_dict(cfg):
        cfg.overrides = list(overrides)
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python containers (safe to pickle into checkpoints)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise MedrunError(f"config value {key} cannot be resolved ({str(e).splitlines()[0]}); set it with {key}=...") from None
