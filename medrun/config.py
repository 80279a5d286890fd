"""Hydra composition of the packaged configs, with user mistakes turned into one-line errors."""
from __future__ import annotations

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


def compose(command: str = "train", overrides: list[str] | tuple = ()) -> DictConfig:
    """Compose configs/<command>.yaml with Hydra overrides; the result also records the overrides."""
    overrides = list(overrides)
    check_choices(overrides)
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a job of `medrun reproduce`)
            cfg = hydra_compose(config_name=command, overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = hydra_compose(config_name=command, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise MedrunError(f"bad override: {msg}") from None
    return finish(cfg, overrides)


def finish(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A composed config checked for required keys and carrying its command-line overrides."""
    missing = sorted(OmegaConf.missing_keys(cfg))
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
