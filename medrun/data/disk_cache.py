"""The persistent preprocessed cache (`data.cache=disk`): a dataset's decoded, resized samples as two NumPy
`.npy` arrays in one folder per key, memory-mapped on reuse.

NumPy memmaps because every sample has one shape at the model's input size, so an array with one row per
sample is the whole format: reading a row is a slice, nothing is deserialised, and every process that maps
the file (later runs, sweep jobs, DDP ranks, loader workers) shares one copy in the OS page cache. It is
what nnU-Net's preprocessed folders do with `np.load(..., mmap_mode="r")`; zarr or LMDB would add a
dependency and a decode step per read, and LitData's chunks a streaming layer a local folder does not need.

A folder holds `images.npy`, `targets.npy`, `meta.json` (shapes, dtypes, SHA-256 of each file) and
`verified.json` (each file's size, modification time and inode when its checksum last matched): pixels and
targets only, no DICOM tags, no file names. It appears by an atomic rename once complete, under a file
lock per key, so a half-written cache is never read and concurrent builders of one key end with one copy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from medrun.data.samples import Dataset, Sample
from medrun.errors import MedrunError
from medrun.runs import write_text

log = logging.getLogger("medrun")

FORMAT = 1  # bump when what a reader or the resize writes changes, so that old caches are not reused
# data keys that act after the cached resize or not on pixels at all; every other key is part of the cache key
NOT_PIXELS = frozenset({"augment", "normalize", "cache", "batch_size", "num_workers", "batched", "decode_workers",
                        "anonymize_ids"})
FILES = ("images.npy", "targets.npy")


def cache_root(cache_dir: str | None) -> Path:
    """`paths.cache_dir`, else $XDG_CACHE_HOME/medrun, else ~/.cache/medrun."""
    if cache_dir:
        return Path(str(cache_dir)).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medrun"


def _file_facts(path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _value_facts(value):
    if isinstance(value, np.ndarray):
        return [value.dtype.str, value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()]
    return repr(value)


def _options(data: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if k not in NOT_PIXELS}


def _named_files(h, options: dict, root) -> None:
    """Hash the facts of the files the options name (csv tables and the like) and those at the top of root."""
    named = [Path(v).expanduser() for v in options.values() if isinstance(v, str) and v]
    if root and Path(str(root)).expanduser().is_dir():
        named += sorted(Path(str(root)).expanduser().iterdir())
    for p in named:
        if p.is_file():
            h.update(json.dumps(_file_facts(p)).encode())


def cache_key(data: DictConfig, dataset: Dataset, size, pad: bool) -> str:
    """Hash of what decides the cached arrays: reader options, target size, and every sample with the size and
    modification time of its files (and of the files at the top of `data.root`: label tables, RLE files)."""
    options = _options(data)
    h = hashlib.sha256(json.dumps({"format": FORMAT, "data": options, "size": list(size), "pad": pad},
                                  sort_keys=True, default=str).encode())
    _named_files(h, options, data.get("root"))
    for s in dataset.samples:
        facts = [s.id, repr(s.label), s.subset, _file_facts(s.image) if s.image else None,
                 _file_facts(s.mask) if s.mask else None, {k: _value_facts(v) for k, v in sorted(s.extra.items())}]
        h.update(json.dumps(facts, default=str).encode())
    return h.hexdigest()[:24]


LISTINGS = "listings"  # <cache root>/listings/<key>.json: stored dataset listings


def listing_key(data: DictConfig) -> str | None:
    """Hash of what decides a reader's listing: its options and every file under `data.root` with its size and
    modification time (a walk and a stat each: no file is opened). None when there is no root to walk."""
    root = Path(str(data.get("root") or "")).expanduser()
    if not root.is_dir():
        return None
    options = {k: v for k, v in _options(data).items() if k != "image_size"}
    h = hashlib.sha256(json.dumps({"format": FORMAT, "listing": options}, sort_keys=True, default=str).encode())
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            st = os.stat(os.path.join(folder, name))
            h.update(f"{os.path.relpath(os.path.join(folder, name), root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    _named_files(h, options, None)
    return h.hexdigest()[:24]


def read_listing(root: Path, key: str, load: Callable) -> Dataset | None:
    """The stored listing of `key` with the reader's `load`, or None when there is none (or it is unreadable)."""
    try:
        stored = json.loads((root / LISTINGS / f"{key}.json").read_text())
        samples = [Sample(id=s["id"], image=Path(s["image"]) if s["image"] else None,
                          mask=Path(s["mask"]) if s["mask"] else None, group=s["group"], subset=s["subset"],
                          label=s["label"], extra=s["extra"]) for s in stored["samples"]]
        return Dataset(samples, load, **stored["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_listing(root: Path, key: str, dataset: Dataset) -> None:
    """Store a listing whose samples are plain data (paths, ids, pseudonymous groups, labels; no DICOM tags)."""
    record = {"dataset": {"kind": dataset.kind, "ordered": dataset.ordered, "classes": dataset.classes,
                          "multilabel": dataset.multilabel},
              "samples": [{"id": s.id, "image": str(s.image) if s.image else None,
                           "mask": str(s.mask) if s.mask else None, "group": s.group, "subset": s.subset,
                           "label": s.label, "extra": s.extra} for s in dataset.samples]}
    try:
        text = json.dumps(record)
    except TypeError:  # a reader that keeps arrays in its samples: listing it again is cheap anyway
        return
    (root / LISTINGS).mkdir(parents=True, exist_ok=True)
    write_text(root / LISTINGS / f"{key}.json", text)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _open(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The verified arrays of a complete cache folder; raises ValueError saying what is wrong.

    A file is hashed when it is new to this check or has been written or replaced since (size, modification
    time, inode differ from `verified.json`): a reuse then costs a stat, not a read of every byte."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"meta.json unreadable ({e})") from None
    if meta.get("format") != FORMAT or meta.get("samples") != n:
        raise ValueError(f"format {meta.get('format')} with {meta.get('samples')} samples, expected {FORMAT} and {n}")
    try:
        verified = json.loads((folder / "verified.json").read_text())
    except (OSError, ValueError):
        verified = {}
    arrays, stamps = [], {}
    for name in FILES:
        facts = meta["files"][name]
        path = folder / name
        if not path.is_file() or path.stat().st_size != facts["bytes"]:
            raise ValueError(f"{name} is missing or truncated")
        stamps[name] = _stamp(path)
        if verified.get(name) != stamps[name] and _sha256(path) != facts["sha256"]:
            raise ValueError(f"{name} does not match its checksum")
        array = np.load(path, mmap_mode="r")
        if list(array.shape) != facts["shape"] or array.dtype.str != facts["dtype"]:
            raise ValueError(f"{name} holds {array.dtype.str} {list(array.shape)}, meta.json says otherwise")
        arrays.append(array)
    if stamps != verified:
        write_text(folder / "verified.json", json.dumps(stamps))
    os.utime(folder / "meta.json")  # last use, for `medrun cache list`
    return arrays[0], arrays[1]


def _build(folder: Path, n: int, first: Callable[[], tuple], fill: Callable[[tuple[Path, Path]], None],
           facts: dict) -> None:
    partial = folder.parent / f".{folder.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        image, target = (np.asarray(v) for v in first())  # sample 0 sets every row's shape and type
        paths = (partial / FILES[0], partial / FILES[1])
        for path, value in zip(paths, (image, target)):
            array = np.lib.format.open_memmap(path, "w+", value.dtype, (n, *value.shape))
            array[0] = value
            array.flush()
            del array
        fill(paths)
        files = {}
        for name in FILES:
            array = np.load(partial / name, mmap_mode="r")
            files[name] = {"shape": list(array.shape), "dtype": array.dtype.str,
                           "bytes": (partial / name).stat().st_size, "sha256": _sha256(partial / name)}
            del array
        (partial / "meta.json").write_text(json.dumps({"format": FORMAT, "samples": n, "files": files,
                                                       "created": time.strftime("%Y-%m-%d %H:%M:%S"), **facts},
                                                      indent=1))
        os.replace(partial, folder)  # atomic: readers see no folder or a complete one
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def open_or_build(root: Path, key: str, n: int, first: Callable[[], tuple],
                  fill: Callable[[tuple[Path, Path]], None], facts: dict, build: bool = True):
    """The arrays of cache `key` under `root`: reused when complete and intact, else built (unless `build` is
    false: then None) from `first()`, sample 0, and `fill(paths)`, which writes rows 1..n-1 into the .npy
    files at `paths`. One process per key builds; the others wait, then read."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MedrunError(f"paths.cache_dir={root} cannot be created ({e.strerror}); set paths.cache_dir to a "
                          "writable folder or use data.cache=memory") from None
    folder = root / key
    with FileLock(str(root / f"{key}.lock")):
        if folder.is_dir():
            try:
                arrays = _open(folder, n)
                log.info("data cache: reusing %s", folder)
                return arrays
            except ValueError as e:
                log.warning("data cache %s is damaged (%s); %s", folder, e, "rebuilding it" if build else "ignoring it")
                if not build:
                    return None
                shutil.rmtree(folder)
        if not build:
            return None
        start = time.perf_counter()
        _build(folder, n, first, fill, facts)
        arrays = _open(folder, n)
        size = sum((folder / f).stat().st_size for f in FILES) / 2**20
        log.info("data cache: built %s (%d samples, %.1f MB) in %.1f s", folder, n, size, time.perf_counter() - start)
        return arrays


def list_caches(root: Path) -> list[dict]:
    """Every complete cache folder under `root`: key, samples, size on disk, reader, created, last used."""
    out = []
    for meta_file in sorted(root.glob("*/meta.json")) if root.is_dir() else []:  # listings/ holds no meta.json
        folder = meta_file.parent
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        out.append({"key": folder.name, "samples": meta.get("samples"), "reader": meta.get("reader"),
                    "image_size": meta.get("image_size"), "created": meta.get("created"),
                    "last_used": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta_file.stat().st_mtime)),
                    "megabytes": round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20, 1)})
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_caches(root: Path, key: str | None = None) -> list[str]:
    """Delete every cache under `root` (or the one `key`), each under its lock; returns the keys deleted."""
    if not root.is_dir():
        return []
    folders = [root / key] if key else [p for p in root.iterdir() if p.is_dir()]
    if key and not folders[0].is_dir():
        valid = ", ".join(c["key"] for c in list_caches(root)) or "none"
        raise MedrunError(f"no cache {key!r} in {root}; valid: {valid} (see medrun cache list)")
    gone = []
    if not key:
        shutil.rmtree(root / LISTINGS, ignore_errors=True)
    for folder in folders:
        if folder.name == LISTINGS:
            continue
        if folder.name.endswith(".partial"):  # a build: remove only the leftovers of one that was killed
            if not _alive(int(folder.name.split(".")[-2])):
                shutil.rmtree(folder, ignore_errors=True)
            continue
        with FileLock(str(root / f"{folder.name}.lock")):  # the lock file stays: a waiting builder holds it open
            shutil.rmtree(folder, ignore_errors=True)
        gone.append(folder.name)
    return gone
