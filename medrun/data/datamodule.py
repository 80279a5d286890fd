"""The LightningDataModule of one fold: train / val / held-out test views of a shared SampleStore."""
from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from medrun.data.store import SampleStore, TransformedSamples
from medrun.data.transforms import pipeline


class FoldDataModule(pl.LightningDataModule):
    def __init__(self, store: SampleStore, split: dict, cfg: DictConfig, seed: int):
        super().__init__()
        self.store, self.split, self.cfg, self.seed = store, split, cfg, seed

    def _loader(self, part: str, train: bool) -> DataLoader:
        transform = pipeline(self.cfg, train)
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
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=bool(self.cfg.get("pin_memory", False)))

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)
