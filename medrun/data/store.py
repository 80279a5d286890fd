"""Decoded, resized samples, held in memory when `data.cache` is on, and the torch Dataset over them."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medrun.data.samples import Dataset
from medrun.data.transforms import resize


class SampleStore:
    """Index -> (image HxWxC, target) at the model's input size; decodes each file once if caching."""

    def __init__(self, dataset: Dataset, size, cache: bool = True, pad: bool = False):
        self.dataset = dataset
        self.samples = dataset.samples
        self.segmentation = dataset.kind == "segmentation"
        self.index = {s.id: i for i, s in enumerate(self.samples)}
        self.size = size
        self.pad = pad
        self._resize = resize(size, pad)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image, target = self.dataset.load(self.samples[i])
        if self.segmentation:
            out = self._resize(image=image, mask=target)
            item = (out["image"], out["mask"])
        else:
            item = (self._resize(image=image)["image"], target)
        if self._cache is not None:
            self._cache[i] = item
        return item

    def preload(self) -> None:
        """Decode every sample now, so bad files fail before training starts."""
        for i in range(len(self)):
            self.get(i)

    def with_samples(self, extra: list) -> "SampleStore":
        """A store of these samples plus `extra` (e.g. a fold's synthetic images) that shares this one's cache."""
        out = SampleStore(replace(self.dataset, samples=[*self.samples, *extra]), self.size, cache=self.cached,
                          pad=self.pad)
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
