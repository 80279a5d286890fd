"""The one way medrun starts a Hydra multirun from inside a command (`medrun -m train` sweeps and `medrun
reproduce`): hydra.main on a config of configs/ with the given overrides, any sweeper or launcher plugin."""
from __future__ import annotations

import sys
from typing import Callable

from omegaconf import DictConfig

from medrun.config import CONFIG_DIR
from medrun.errors import MedrunError


def run_multirun(config_name: str, task_function: Callable[[DictConfig], object], overrides: list[str]) -> None:
    """Run `task_function` once per job of the multirun that `overrides` describe. Hydra reads its command line
    from sys.argv, so it is swapped for the call and restored after; Hydra's global state is cleared."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    argv = sys.argv
    sys.argv = [argv[0] if argv else "medrun", "--multirun", *overrides]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task_function)()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def one_line(e: Exception) -> str:
    """A job's failure as one line for its record: a MedrunError's message, else the exception type and text."""
    text = " ".join(str(e).split())
    return text if isinstance(e, MedrunError) else f"{type(e).__name__}: {text}"
