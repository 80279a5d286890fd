"""Shared loader of the classification readers: image file (or in-memory array) + class label(s)."""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medrun.data.images import read_image, to_channels
from medrun.data.samples import Dataset, Sample
from medrun.errors import MedrunError


def labelled_dataset(samples: list[Sample], cfg: DictConfig, classes: list[str], multilabel: bool) -> Dataset:
    """Samples carry `label` (class index) or, when multi-label, `extra["targets"]` (multi-hot)."""
    channels = int(cfg.channels)
    dicom = OmegaConf.to_container(cfg.dicom, resolve=True) if cfg.get("dicom") else None

    def load(s: Sample):
        if s.image is not None:
            image = read_image(s.image, channels, dicom)
        else:
            image = to_channels(s.extra["array"], channels, f"sample {s.id}")
        target = np.asarray(s.extra["targets"], dtype=np.float32) if multilabel else int(s.label)
        return image, target

    if len(classes) < 2:
        raise MedrunError(f"found {len(classes)} class(es) {classes}: classification needs at least 2 (data.classes)")
    ds = Dataset(samples, load, kind="classification")
    ds.classes, ds.multilabel = list(classes), multilabel
    return ds


def class_index(classes: list[str]) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(classes)}
