"""The run-folder contract: a new folder per run, atomic writes, safe checkpoint loading."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from datetime import datetime
from pathlib import Path

import torch

from medrun.errors import MedrunError

# Lightning's DDP re-runs the command line in child processes; they find the parent's run folder here.
RUN_DIR_ENV = "MEDRUN_RUN_DIR"


def is_ddp_child() -> bool:
    """A DDP process other than global rank 0: it writes nothing and reuses rank 0's run folder.

    Lightning's launcher sets LOCAL_RANK and NODE_RANK (a node > 0 counts even for its first process),
    torchrun sets RANK, SLURM sets SLURM_PROCID.
    """
    return any(int(os.environ.get(v, "0") or 0) > 0 for v in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


NAME_BYTES = 128  # a folder name; file systems allow 255 bytes, and runs add suffixes beside it


def check_name(name: str, key: str = "name") -> str:
    """A run or experiment name is one folder name: no separators, no '..'."""
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~"):
        raise MedrunError(f"{key}={name!r} must be a plain folder name (letters, digits, '_', '-', '.'), "
                          "not a path; use paths.output_dir= to choose where runs go")
    if len(name.encode()) > NAME_BYTES:
        raise MedrunError(f"{key}={name} is {len(name)} characters long; use at most {NAME_BYTES} (it names a folder)")
    return name


def file_part(text: str, most: int = 64) -> str:
    """A name from data (a class, a sample id) as one safe part of a file name: characters other than letters,
    digits, '.', '_' and '-' become '_', and a name that had to change or be cut gets a short hash of the
    original, so two names never share a file."""
    import hashlib
    import re

    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"
    if safe == text and len(text) <= most:
        return text
    return f"{safe[:most]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def resolve_inside(root: Path, relative: str | Path, what: str) -> Path:
    """`root / relative`, refused when it resolves outside `root` (a crafted path such as ../../x)."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise MedrunError(f"{what} {str(relative)!r} points outside {root}; refusing to read it")
    return path


def writable(folder: str | Path, key: str) -> Path:
    """`folder` as an absolute path, refused in one line naming `key` when it could not be made or written: its
    nearest existing ancestor must be a writable folder (checked before any decoding or training, so a long run
    never fails at its first write; only a probe folder is made there, and removed)."""
    path = Path(str(folder)).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MedrunError(f"{key}={path} cannot be created: {existing} is a file; choose a folder you can write")
    try:  # a real probe: permission bits say nothing to root, nor about /proc, read-only mounts or full disks
        tempfile.TemporaryDirectory(dir=existing, prefix=".medrun-probe-").cleanup()
    except OSError as e:
        raise MedrunError(f"{key}={path} is not writable ({existing}: {e.strerror or e}); choose a folder you can "
                          "write") from None
    return path


def create_run_dir(output_dir: str | Path, experiment: str) -> Path:
    """Make `<output_dir>/<experiment>/<YYYY-MM-DD_HH-MM-SS>[_n]`; never reuses an existing folder."""
    parent = writable(output_dir, "paths.output_dir") / check_name(experiment)
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


def fold_folder(run_dir: str | Path, fold: int) -> Path:
    """The folder of fold `fold` inside a run folder."""
    return Path(run_dir) / f"fold_{int(fold)}"


def fold_metrics_file(run_dir: str | Path, fold: int) -> Path:
    """A fold's metrics.json: written once its held-out part is scored (a finished fold)."""
    return fold_folder(run_dir, fold) / "metrics.json"


def unfinished_folds(run_dir: str | Path, splits: dict) -> list[int]:
    return [f["fold"] for f in splits["folds"] if not fold_metrics_file(run_dir, f["fold"]).is_file()]


def fold_records(run_dir: str | Path, splits: dict, need: tuple[str, ...] = ()) -> list[dict]:
    """Every fold's metrics.json, in fold order."""
    return [read_json(fold_metrics_file(run_dir, f["fold"]), need) for f in splits["folds"]]


def test_parts(splits: dict) -> list:
    """Each fold's test ids and the fixed test set of a splits.json: equal lists mean comparable runs."""
    return [sorted(f["test"]) for f in splits["folds"]] + [sorted(splits.get("fixed_test", []))]


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


def _check_integrity(path: Path) -> None:
    """Refuse, as damaged, a file that is not a PyTorch checkpoint or whose bytes changed since it was written.

    torch.save writes a zip archive with a CRC-32 of every member (the pickle and each tensor's bytes); torch.load
    does not check them, so a flipped byte inside the weights would load silently. They are checked here
    (zipfile.testzip), for every checkpoint medrun writes or reads. The pre-1.6 format is a bare pickle."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise MedrunError(f"{path} is a Git LFS pointer, not the checkpoint itself: fetch the file (git lfs pull) "
                          "or copy the real checkpoint")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"\x80"):  # a pickle: the legacy torch.save format
            return
        raise _damaged(path, ValueError("neither a PyTorch zip archive nor a pickle"))
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                raise _damaged(path, ValueError("a zip archive without the data.pkl of a PyTorch checkpoint"))
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _damaged(path, e) from None
    if bad is not None:
        raise _damaged(path, ValueError(f"its member {bad} does not match the CRC-32 written with it"))


def load_checkpoint(path: str | Path, allow_unsafe: bool = False) -> dict:
    """Load a checkpoint with weights_only=True: tensors and plain containers only, no code runs.

    A damaged file (not a checkpoint, or bytes changed since it was written: `_check_integrity`) is called
    damaged. A file that needs full unpickling is refused; `allow_unsafe` (config: allow_unsafe_checkpoints=true)
    is the explicit opt-in for files from a source you trust, since unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise MedrunError(f"checkpoint not found: {path}")
    _check_integrity(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights_only refusal; any other failure means the file itself is damaged (below)
        if "weights only load failed" not in str(e).lower():
            raise _damaged(path, e) from None
        if not allow_unsafe:
            first = str(e).strip().splitlines()[0][:200]
            raise MedrunError(
                f"refusing to load {path}: it holds objects beyond tensors and plain containers, and unpickling "
                f"them could run code ({first}). If you trust its source, pass allow_unsafe_checkpoints=true"
            ) from None
    except Exception as e:
        raise _damaged(path, e) from None
    warnings.warn(f"loading {path} with full unpickling (allow_unsafe_checkpoints=true)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise _damaged(path, e) from None


def _damaged(path: Path, e: Exception) -> MedrunError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    return MedrunError(f"{path} is damaged or not a PyTorch checkpoint ({first}); re-create it, or delete it so that "
                       "a resumed fold restarts")


def read_state_dict(path, key: str) -> dict:
    """A weights file as a state_dict, read with weights_only=True (a {"state_dict": ...} wrapper is unwrapped)."""
    try:
        state = load_checkpoint(path)
    except MedrunError as e:
        raise MedrunError(f"{key}: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedrunError(f"{key}={path} is not a state_dict (a mapping of parameter names to tensors)")
    return dict(state)


def require_run_dir(path: str | Path) -> Path:
    """A folder written by `medrun train`: it has config.yaml and splits.json."""
    path = Path(str(path)).expanduser().resolve()
    missing = [n for n in ("config.yaml", "splits.json") if not (path / n).is_file()]
    if not path.is_dir() or missing:
        runs = sorted(d for d in path.glob("*/") if (d / "config.yaml").is_file() and (d / "splits.json").is_file()) \
            if path.is_dir() else []
        hint = f"; it holds {len(runs)} run folder(s), the newest {runs[-1]}" if runs else \
            "; pass a folder under outputs/<experiment>/"
        raise MedrunError(f"{path} is not a medrun run folder (missing {', '.join(missing) or 'folder'}){hint}")
    return path


LOCK_NAME = ".medrun.lock"


class FolderLock:
    """An exclusive lock on a folder, held while one process writes into it (flock on `<folder>/.medrun.lock`,
    released when the process ends, even when it is killed). A second writer fails at once, naming the holder."""

    def __init__(self, folder: Path, what: str, wait: bool = False):
        import fcntl
        import socket

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_NAME
        self.file = open(self.path, "a+")
        try:  # `wait`: a short claim another job may hold (fold jobs claiming one run folder), not a writer's
            fcntl.flock(self.file, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise MedrunError(f"{what} {folder} is being written by {holder}; wait for it to finish, or use another "
                              "folder (runs never share a writer)") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"process {os.getpid()} on {socket.gethostname()}")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the descriptor releases the flock


def read_json(path: Path, need: tuple[str, ...] = ()) -> dict:
    """A JSON file of a run folder; a missing, damaged or incomplete one is one line naming it (a run folder may
    be copied, edited or cut short)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MedrunError(f"{path} is missing: the run folder is incomplete") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise MedrunError(f"{path} is damaged (not JSON: {' '.join(str(e).split())[:80]}); restore it or "
                          "re-create the run") from None
    missing = [k for k in need if not isinstance(data, dict) or k not in data]
    if missing:
        raise MedrunError(f"{path} lacks {', '.join(repr(k) for k in missing)}: it is not a complete medrun file")
    return data
