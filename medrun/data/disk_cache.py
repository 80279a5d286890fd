"""The persistent preprocessed cache (`data.cache=disk`): a dataset's decoded, resized samples as two NumPy
`.npy` arrays in one folder per key, memory-mapped on reuse.

NumPy memmaps because every sample has one shape at the model's input size, so an array with one row per
sample is the whole format: reading a row is a slice, nothing is deserialised, and every process that maps
the file (later runs, sweep jobs, DDP ranks, loader workers) shares one copy in the OS page cache. It is
what nnU-Net's preprocessed folders do with `np.load(..., mmap_mode="r")`; zarr or LMDB would add a
dependency and a decode step per read, and LitData's chunks a streaming layer a local folder does not need.

A folder holds `images.npy`, `targets.npy`, `meta.json` (shapes, dtypes, SHA-256 of each file) and
`verified.json` (each file's size, modification and change times and inode when its checksum last matched):
pixels and targets only, no DICOM tags, no file names. Its name is the key (24 hex digits) and its meta.json the
marker `cache clear` looks for: nothing else in the cache folder is ever deleted, and a symlinked entry is never
used. It appears by an atomic rename once complete, under a file
lock per key, so a half-written cache is never read and concurrent builders of one key end with one copy.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
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
                        "anonymize_ids", "cache_key"})
FILES = ("images.npy", "targets.npy")
KEY = re.compile(r"[0-9a-f]{24}")
PARTIAL = re.compile(r"\.([0-9a-f]{24})\.(\d+)\.partial")  # a build in progress: .<key>.<pid>.partial
CONTENT_KEY_BYTES = 256 * 2**20  # data.cache_key=auto hashes the files' bytes up to this total, else their stat


def cache_root(cache_dir: str | None) -> Path:
    """`paths.cache_dir`, else $XDG_CACHE_HOME/medrun, else ~/.cache/medrun."""
    if cache_dir:
        return Path(str(cache_dir)).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medrun"


def _file_facts(path, content: bool = False) -> list:
    """What identifies a file's bytes: their SHA-256 (`content`), else size, modification and change times and
    inode. The change time moves on every write and no tool can set it back, so a file rewritten in place with
    its size and modification time restored still reads as changed."""
    try:
        if content:
            with open(path, "rb") as f:
                return [str(path), hashlib.file_digest(f, "sha256").hexdigest()]
        st = os.stat(path)
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _value_facts(value):
    if isinstance(value, np.ndarray):
        return [value.dtype.str, value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()]
    return repr(value)


def _options(data: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if k not in NOT_PIXELS}


def _named_files(h, options: dict, root, content: bool = False) -> None:
    """Hash the facts of the files the options name (csv tables and the like) and those at the top of root."""
    named = [Path(v).expanduser() for v in options.values() if isinstance(v, str) and v]
    if root and Path(str(root)).expanduser().is_dir():
        named += sorted(Path(str(root)).expanduser().iterdir())
    for p in named:
        if p.is_file():
            h.update(json.dumps(_file_facts(p, content)).encode())


def _by_content(data: DictConfig, dataset: Dataset) -> bool:
    """data.cache_key: content (hash every file's bytes), stat (size, times, inode) or auto (content while the
    samples' files total at most CONTENT_KEY_BYTES, where reading them costs far less than decoding them)."""
    mode = str(data.get("cache_key", "auto"))
    if mode not in ("auto", "content", "stat"):
        raise MedrunError(f"data.cache_key={mode!r}; valid: auto, content, stat")
    if mode != "auto":
        return mode == "content"
    total = 0
    for s in dataset.samples:
        for path in (s.image, s.mask):
            try:
                total += os.stat(path).st_size if path else 0
            except OSError:
                pass
        if total > CONTENT_KEY_BYTES:
            return False
    return True


def cache_key(data: DictConfig, dataset: Dataset, size, pad: bool) -> str:
    """Hash of what decides the cached arrays: reader options, target size, and every sample with the facts of
    its files (`_file_facts`: their bytes or their stat, data.cache_key) and of the files at the top of
    `data.root` (label tables, RLE files)."""
    options = _options(data)
    content = _by_content(data, dataset)
    h = hashlib.sha256(json.dumps({"format": FORMAT, "data": options, "size": list(size), "pad": pad,
                                   "content": content}, sort_keys=True, default=str).encode())
    _named_files(h, options, data.get("root"), content)
    for s in dataset.samples:
        facts = [s.id, repr(s.label), s.subset, _file_facts(s.image, content) if s.image else None,
                 _file_facts(s.mask, content) if s.mask else None,
                 {k: _value_facts(v) for k, v in sorted(s.extra.items())}]
        h.update(json.dumps(facts, default=str).encode())
    return h.hexdigest()[:24]


LISTINGS = "listings"  # <cache root>/listings/<key>.json: stored dataset listings


def listing_key(data: DictConfig) -> str | None:
    """Hash of what decides a reader's listing: its options and every file under `data.root` with its stat facts
    (`_file_facts`: a walk and a stat each, no file is opened). None when there is no root to walk."""
    root = Path(str(data.get("root") or "")).expanduser()
    if not root.is_dir():
        return None
    options = {k: v for k, v in _options(data).items() if k != "image_size"}
    h = hashlib.sha256(json.dumps({"format": FORMAT, "listing": options}, sort_keys=True, default=str).encode())
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            h.update(json.dumps([os.path.relpath(path, root), *_file_facts(path)[1:]]).encode())
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
    try:
        (root / LISTINGS).mkdir(parents=True, exist_ok=True)
        write_text(root / LISTINGS / f"{key}.json", text)
    except OSError as e:  # the listing only saves time; the cache itself says what is wrong with the folder
        log.warning("data cache: listing not stored in %s (%s)", root, e.strerror or e)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _open(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The verified arrays of a complete cache folder; raises ValueError saying what is wrong.

    A file is hashed when it is new to this check or has been written or replaced since (size, modification or
    change time, inode differ from `verified.json`; a change time cannot be set back, so a damaged file whose
    modification time was restored is hashed too): a reuse then costs a stat, not a read of every byte."""
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
        if path.is_symlink():
            raise ValueError(f"{name} is a symbolic link; a cache entry holds its own files")
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


def _reserve(path: Path) -> None:
    """Allocate the blocks of a new .npy file now: a memory map over a sparse file on a full disk ends in SIGBUS
    at the first page the disk cannot hold, with no message; a reservation fails at once with ENOSPC."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


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
            del array
            _reserve(path)
            array = np.load(path, mmap_mode="r+")
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


def _unusable(root: Path, e: OSError) -> MedrunError:
    what = "is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else f"cannot be written ({e.strerror or e})"
    return MedrunError(f"paths.cache_dir={root} {what}; free space there, set paths.cache_dir to another folder, "
                       "or use data.cache=memory")


def open_or_build(root: Path, key: str, n: int, first: Callable[[], tuple],
                  fill: Callable[[tuple[Path, Path]], None], facts: dict, build: bool = True):
    """The arrays of cache `key` under `root`: reused when complete and intact, else built (unless `build` is
    false: then None) from `first()`, sample 0, and `fill(paths)`, which writes rows 1..n-1 into the .npy
    files at `paths`. One process per key builds; the others wait, then read."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / f"{key}.lock"))
        lock.acquire()
    except OSError as e:
        raise _unusable(root, e) from None
    try:
        return _open_or_build(root, key, n, first, fill, facts, build)
    except OSError as e:
        if Path(getattr(e, "filename", None) or "/").is_relative_to(root) or e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _unusable(root, e) from None
        raise
    finally:
        lock.release()


def _open_or_build(root: Path, key: str, n: int, first, fill, facts: dict, build: bool):
    folder = root / key
    if folder.is_symlink():  # another dataset's cache, or anything else: never read through it
        log.warning("data cache %s is a symbolic link; %s", folder, "replacing it" if build else "ignoring it")
        if not build:
            return None
        folder.unlink()
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


def _entries(root: Path) -> list[Path]:
    """The cache entries under `root`: real folders named by a key and holding a meta.json."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if KEY.fullmatch(p.name) and not p.is_symlink() and p.is_dir()
                  and (p / "meta.json").is_file())


def list_caches(root: Path) -> list[dict]:
    """Every complete cache entry under `root`: key, samples, size on disk, reader, created, last used."""
    out = []
    for folder in _entries(root):
        meta_file = folder / "meta.json"
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
    """Delete every cache entry under `root` (or the one `key`), each under its lock, the leftovers of killed
    builds and the stored listings; returns the keys deleted. Nothing that is not medrun's is touched."""
    if key is not None and not KEY.fullmatch(str(key)):
        raise MedrunError(f"key={key!r} is not a cache key (24 hex digits, as `medrun cache list` shows them)")
    entries = _entries(root)
    if key is not None:
        entries = [p for p in entries if p.name == key]
        if not entries:
            valid = ", ".join(p.name for p in _entries(root)) or "none"
            raise MedrunError(f"no cache {key!r} in {root}; valid: {valid} (see medrun cache list)")
    gone = []
    try:
        for folder in entries:
            with FileLock(str(root / f"{folder.name}.lock")):  # the lock file stays: a waiting builder holds it open
                shutil.rmtree(folder)
            gone.append(folder.name)
        if key is None:
            for p in root.iterdir():
                found = PARTIAL.fullmatch(p.name)
                if found and p.is_dir() and not p.is_symlink() and not _alive(int(found.group(2))):
                    shutil.rmtree(p)  # a build killed before its rename
            listings = root / LISTINGS
            if listings.is_dir() and not listings.is_symlink():
                for p in listings.iterdir():
                    if KEY.fullmatch(p.stem) and p.suffix == ".json" and p.is_file():
                        p.unlink()
                if not any(listings.iterdir()):
                    listings.rmdir()
    except OSError as e:
        raise MedrunError(f"paths.cache_dir={root}: {e.filename or ''} cannot be deleted ({e.strerror or e}); "
                          "check its permissions") from None
    return gone
