"""Decoded, resized samples (held in memory, memory-mapped from the disk cache, or decoded on every read, by
`data.cache`), the parallel decode that fills them, and the torch Dataset over them."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from medrun.data.samples import Dataset
from medrun.data.transforms import resize
from medrun.errors import MedrunError

CACHE_MODES = ("memory", "disk", "off")
_FORKED: Callable[[int], object] | None = None  # what a decode pool's forked workers call
_ROWS: dict = {}  # per process: the cache arrays being filled, opened once (see SampleStore.fill)


def cache_mode(value) -> str:
    """`data.cache` as one of CACHE_MODES (true / false, from configs before disk caching, mean memory / off)."""
    if isinstance(value, bool):
        return "memory" if value else "off"
    if str(value) not in CACHE_MODES:
        raise MedrunError(f"data.cache={value!r} is not valid; valid: {', '.join(CACHE_MODES)}")
    return str(value)


def decode_workers(value, n: int) -> int:
    """`data.decode_workers`: a number, or auto (every usable core once there are 64 samples or more: below
    that, starting the processes costs more than they save)."""
    if str(value) == "auto":
        return len(os.sched_getaffinity(0)) if n >= 64 and hasattr(os, "sched_getaffinity") else 1
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = 0
    if workers < 1:
        raise MedrunError(f"data.decode_workers={value!r} is not valid: use auto or a number of processes >= 1")
    return workers


def _call_forked(i: int):
    return _FORKED(i)


def _map(fn: Callable[[int], object], indices: list[int], workers: int) -> Iterator:
    """fn(i) for `indices` in order, with a progress bar; in `workers` forked processes when more than one (fn is
    inherited by the fork, never pickled). A bad file fails with its reader's message; a worker that dies ends
    the pool instead of hanging it."""
    bar = tqdm(total=len(indices), desc="decoding", unit="image", leave=False, disable=None)
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            for i in indices:
                yield fn(i)
                bar.update()
            return
        global _FORKED
        _FORKED = fn
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            for out in pool.map(_call_forked, indices, chunksize=max(1, min(32, len(indices) // (workers * 4)))):
                yield out
                bar.update()
        except BrokenProcessPool:
            raise MedrunError("a decode worker died (out of memory, or a crash in a decoder); set "
                              "data.decode_workers=1 to see the error, or lower it") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _FORKED = None
    finally:
        bar.close()


class SampleStore:
    """Index -> (image HxWxC, target) at the model's input size.

    `cache`: memory keeps each decoded sample in a dict; disk reads rows of memory-mapped arrays (see
    medrun.data.disk_cache, attached with `attach`); off decodes on every read.
    """

    def __init__(self, dataset: Dataset, size, cache="memory", pad: bool = False):
        self.dataset = dataset
        self.samples = dataset.samples
        self.segmentation = dataset.kind == "segmentation"
        self.index = {s.id: i for i, s in enumerate(self.samples)}
        self.size = size
        self.pad = pad
        self.mode = cache_mode(cache)
        self._resize = resize(size, pad)
        # memory: every sample; disk: those beyond the arrays (a fold's synthetic images, or all when not built)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None if self.mode == "off" else {}
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def cached(self) -> bool:
        return self.mode != "off"

    def decode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample i from its files and resize it (no cache involved)."""
        image, target = self.dataset.load(self.samples[i])
        if self.segmentation:
            out = self._resize(image=image, mask=target)
            return out["image"], out["mask"]
        return self._resize(image=image)["image"], target

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is not None and i < len(self._arrays[0]):
            images, targets = self._arrays
            target = targets[i]
            # copies: the mapped pages stay shared and read-only, what the caller transforms is its own
            return np.array(images[i]), (target.item() if target.ndim == 0 else np.array(target))
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = self.decode(i)
        if self._cache is not None:
            self._cache[i] = item
        return item

    def decoded(self, indices: list[int], workers: int = 1) -> Iterator[tuple[int, tuple]]:
        """(i, decoded sample i) for `indices` in order, decoded in `workers` forked processes when more than one."""
        return zip(indices, _map(self.decode, indices, workers))

    def fill(self, paths: tuple[Path, Path], indices: list[int], workers: int = 1) -> None:
        """Decode `indices` into their rows of the .npy image and target arrays at `paths`, in place: workers
        write to the shared file, so no decoded image travels between processes."""
        try:
            for i, wrong in zip(indices, _map(partial(self._write_row, paths), indices, workers)):
                if wrong:
                    raise MedrunError(f"data.cache=disk keeps every sample at one shape and type, but the {wrong[0]} "
                                      f"of sample {self.samples[i].id} is {wrong[1]} where the first was {wrong[2]}; "
                                      "use data.cache=memory")
        finally:
            _ROWS.clear()  # close this process's maps of the files

    def _write_row(self, paths: tuple[Path, Path], i: int) -> tuple | None:
        if paths not in _ROWS:
            _ROWS[paths] = tuple(np.load(p, mmap_mode="r+") for p in paths)
        for array, value, what in zip(_ROWS[paths], map(np.asarray, self.decode(i)), ("image", "target")):
            if value.shape != array.shape[1:] or value.dtype != array.dtype:
                return what, f"{value.dtype} {list(value.shape)}", f"{array.dtype} {list(array.shape[1:])}"
            array[i] = value
        return None

    def preload(self, workers: int = 1) -> None:
        """Decode every sample now, so bad files fail before training starts (and keep them unless cache=off)."""
        for i, item in self.decoded([i for i in range(len(self)) if not self.has(i)], workers):
            if self._cache is not None:
                self._cache[i] = item

    def has(self, i: int) -> bool:
        return (self._arrays is not None and i < len(self._arrays[0])) or (self._cache is not None and i in self._cache)

    def attach(self, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        """Serve samples 0..n-1 from `arrays` (the disk cache's memory-mapped images and targets)."""
        self._arrays = arrays

    def with_samples(self, extra: list) -> "SampleStore":
        """A store of these samples plus `extra` (e.g. a fold's synthetic images) that shares this one's cache."""
        out = SampleStore(replace(self.dataset, samples=[*self.samples, *extra]), self.size, cache=self.mode,
                          pad=self.pad)
        out._arrays = self._arrays
        if self._cache is not None:
            out._cache.update(self._cache)
        return out

    def indices(self, ids: list[str]) -> list[int]:
        return [self.index[i] for i in ids]


class TransformedSamples(TorchDataset):
    """Samples `indices` of a store through an albumentations `transform` (masks transformed alike)."""

    def __init__(self, store: SampleStore, indices: list[int], transform, seed: int, random: bool = False):
        self.store, self.indices, self.transform, self.random = store, indices, transform, random
        self.transform.set_random_seed(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        if self.random:
            # albumentations keeps its own RNG: draw its seed from torch's, which seed_everything makes
            # deterministic in the main process and in every worker, and which checkpoints restore.
            self.transform.set_random_seed(int(torch.randint(2**31 - 1, ())))
        i = self.indices[k]
        image, target = self.store.get(i)
        if self.store.segmentation:
            out = self.transform(image=image, mask=target)
            return {"image": out["image"].float(), "target": out["mask"].long(), "index": i}
        target = torch.as_tensor(target)
        return {"image": self.transform(image=image)["image"].float(),
                "target": target.float() if target.ndim else target.long(), "index": i}
