"""The LightningDataModule of one fold: train / val / held-out test views of a shared SampleStore."""
from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader

from medrun.data.batched import BatchFlips, CachedBatches, augment_and_normalize, keep_batch, batch_augmentation, use_batched
from medrun.data.store import SampleStore, TransformedSamples
from medrun.data.transforms import pipeline

log = logging.getLogger("medrun")


class FoldDataModule(pl.LightningDataModule):
    """Per-sample albumentations path, or the batched one (cached uint8 batches augmented and normalised on the
    training device, see medrun.data.batched); `path` says which. A split naming `streams` (parts of its own,
    e.g. the cascade's positive images) trains on {"train": batch, stream: batch or None} instead: each part
    is shuffled and passed once an epoch, the shorter ones giving None once they are through."""

    def __init__(self, store: SampleStore, split: dict, cfg: DictConfig, seed: int, batched: bool | None = None):
        super().__init__()
        self.store, self.split, self.cfg, self.seed = store, split, cfg, seed
        self.fixed = batched  # held-out scoring outside the Trainer passes False: its batches skip the device hook
        self.choose("cpu")

    def choose(self, device_type: str) -> None:
        """Pick the path for training on `device_type` (data.batched, see medrun.data.batched.use_batched)."""
        self.batched = use_batched(self.cfg, self.store, device_type) if self.fixed is None else self.fixed
        self.augmentation = batch_augmentation(self.cfg) if self.batched else None
        kind = "uint8 flips" if isinstance(self.augmentation, BatchFlips) else "kornia"
        self.path = f"batched ({kind}, on the training device)" if self.batched else "per-sample (albumentations)"

    def setup(self, stage: str) -> None:
        self.choose(self.trainer.strategy.root_device.type if self.trainer is not None else "cpu")
        log.info("data path: %s", self.path)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if "image" not in batch:  # the streams' batches
            return {k: b if b is None else self.on_after_batch_transfer(b, dataloader_idx) for k, b in batch.items()}
        if not self.batched or batch["image"].dtype != torch.uint8:
            return batch
        training = self.trainer is not None and self.trainer.training
        return augment_and_normalize(batch, self.augmentation if training else None, self.cfg.normalize,
                                     self.store.segmentation)

    def _loader(self, part: str, train: bool) -> DataLoader:
        if self.batched:
            return self._batched_loader(part, train)
        # with data.augment_schedule the Trainer reloads this loader every epoch (medrun.training.build_trainer)
        transform = pipeline(self.cfg, train, int(getattr(self.trainer, "current_epoch", 0) or 0))
        random = train and len(transform.transforms) > 2  # augmentations beyond Normalize and ToTensor
        ds = TransformedSamples(self.store, self.store.indices(self.split[part]), transform, self.seed, random)
        workers = int(self.cfg.num_workers)
        sampler = None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            # Lightning's default sampler pads with repeated samples so that ranks are even, and the repeats
            # would count twice in validation metrics; this one gives each sample to exactly one rank.
            sampler = UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        return DataLoader(ds, batch_size=int(self.cfg.batch_size), shuffle=train, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0, drop_last=self._drop_last(ds, train),
                          pin_memory=bool(self.cfg.get("pin_memory", False)))

    def _batched_loader(self, part: str, train: bool) -> DataLoader:
        ds = CachedBatches(self.store, self.store.indices(self.split[part]))
        sampler = None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        cuda = torch.cuda.is_available() and trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(ds, batch_size=int(self.cfg.batch_size), shuffle=train, sampler=sampler,
                          collate_fn=keep_batch, pin_memory=cuda, drop_last=self._drop_last(ds, train))

    def _drop_last(self, ds, train: bool) -> bool:
        """Training only: a last batch of one sample is dropped, as batch norm cannot train on it (it fails where
        a feature map is 1x1, e.g. DenseNet at small sizes); the shuffle puts another sample last next epoch."""
        return train and len(ds) > 1 and len(ds) % int(self.cfg.batch_size) == 1

    def scoring_dataloader(self, part: str) -> DataLoader:
        """Part `part` in order and without augmentation (e.g. the training part's features for a head fit
        after training)."""
        return self._loader(part, train=False)

    def train_dataloader(self):
        streams = list(self.split.get("streams") or [])
        if not streams:
            return self._loader("train", train=True)
        return CombinedLoader({part: self._loader(part, train=True) for part in ["train", *streams]}, mode="max_size")

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)
