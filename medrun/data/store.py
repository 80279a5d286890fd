"""Decoded, resized samples, held in memory when `data.cache` is on, and the torch Dataset over them."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medrun.data.samples import Dataset
from medrun.data.transforms import resize


class SampleStore:
    """Index -> (image HxWxC, mask HxW) at the model's input size; decodes each file once if caching."""

    def __init__(self, dataset: Dataset, size, cache: bool = True):
        self.dataset = dataset
        self.samples = dataset.samples
        self.index = {s.id: i for i, s in enumerate(self.samples)}
        self._resize = resize(size)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image, mask = self.dataset.load(self.samples[i])
        out = self._resize(image=image, mask=mask)
        item = (out["image"], out["mask"])
        if self._cache is not None:
            self._cache[i] = item
        return item

    def preload(self) -> None:
        """Decode every sample now, so bad files fail before training starts."""
        for i in range(len(self)):
            self.get(i)

    def indices(self, ids: list[str]) -> list[int]:
        return [self.index[i] for i in ids]


class SegmentationSet(TorchDataset):
    """Samples `indices` of a store through an albumentations `transform`."""

    def __init__(self, store: SampleStore, indices: list[int], transform, seed: int):
        self.store, self.indices, self.transform = store, indices, transform
        self.transform.set_random_seed(seed)
        self._seeded_worker: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._seeded_worker != info.id:
            # albumentations keeps its own RNG; derive it from the worker's torch seed, which
            # Lightning's seed_everything(workers=True) makes deterministic.
            self.transform.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_worker = info.id
        i = self.indices[k]
        image, mask = self.store.get(i)
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"].float(), "mask": out["mask"].long(), "index": i}
