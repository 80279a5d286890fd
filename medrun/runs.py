"""The run-folder contract: a new folder per run, atomic writes, safe checkpoint loading."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from medrun.errors import MedrunError

# Lightning's DDP re-runs the command line in child processes; they find the parent's run folder here.
RUN_DIR_ENV = "MEDRUN_RUN_DIR"


def is_ddp_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 and RUN_DIR_ENV in os.environ


def create_run_dir(output_dir: str | Path, experiment: str) -> Path:
    """Make `<output_dir>/<experiment>/<YYYY-MM-DD_HH-MM-SS>[_n]`; never reuses an existing folder."""
    parent = Path(output_dir).resolve() / experiment
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            path.mkdir()  # atomic: two processes can never both get the same folder
            return path
        except FileExistsError:
            continue
    raise MedrunError(f"cannot create a new run folder under {parent}")


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with weights_only=True: tensors and plain containers only, no code runs."""
    path = Path(path)
    if not path.is_file():
        raise MedrunError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MedrunError(f"refusing to load {path}: it does not load with weights_only=True ({e})") from None
