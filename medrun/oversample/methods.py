"""The oversampling methods, by `oversample.name`: each makes synthetic minority-class images from one fold's
training part (medrun.oversample.fold writes them and adds them to the fold)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.registry import Registry

# name -> (cfg, store, fold, out_dir, majority ids, minority ids) -> [(source id, HxWxC uint8 image)]
OVERSAMPLERS: Registry = Registry("oversampler", "oversample.name")


@OVERSAMPLERS.register("duplicate")
def duplicate(cfg, store: SampleStore, fold: dict, out_dir: Path, majority: list[str], minority: list[str]):
    """Plain random oversampling, the control: minority images drawn with replacement until the classes match."""
    rng = np.random.default_rng(int(cfg.seed) + fold["fold"])
    picks = rng.choice(minority, size=max(0, len(majority) - len(minority)), replace=True)
    return [(str(i), store.get(store.index[str(i)])[0]) for i in picks]


@OVERSAMPLERS.register("augment")
def augment(cfg, store: SampleStore, fold: dict, out_dir: Path, majority: list[str], minority: list[str]):
    """Classic augmentation, MelaNet Table 2.1's Augment-5x / 10x baselines: `oversample.factor` augmented copies of
    every training image of the plan's class (`oversample.classes=all`: every class, each its own plan), each drawn
    through `oversample.augment` (albumentations transforms)."""
    import albumentations as A

    from medrun.data.transforms import augmentations

    factor = int(cfg.oversample.factor)
    if factor < 1:
        raise MedrunError(f"oversample.factor={factor}: give the number of augmented copies per image (>= 1)")
    transform = A.Compose(augmentations(cfg.oversample), seed=int(cfg.seed) + fold["fold"])
    return [(i, transform(image=store.get(store.index[i])[0])["image"]) for i in minority for _ in range(factor)]


@OVERSAMPLERS.register("cyclegan")
def cyclegan(cfg, store: SampleStore, fold: dict, out_dir: Path, majority: list[str], minority: list[str]):
    from medrun.oversample.translate import train_and_translate

    return train_and_translate(cfg, store, fold, out_dir, majority, minority)
