"""Shared loader of the classification readers: image file (or in-memory array) + class label(s)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medrun.data.dicom import frame_count
from medrun.data.images import read_image, to_channels
from medrun.data.samples import Dataset, Sample
from medrun.errors import MedrunError


def labelled_dataset(samples: list[Sample], cfg: DictConfig, classes: list[str], multilabel: bool) -> Dataset:
    """Samples carry `label` (class index) or, when multi-label, `extra["targets"]` (multi-hot)."""
    channels = int(cfg.channels)
    dicom = OmegaConf.to_container(cfg.dicom, resolve=True) if cfg.get("dicom") else {}

    def load(s: Sample):
        if s.image is not None:
            opts = {**dicom, "frame": s.extra["frame"]} if "frame" in s.extra else dicom
            image = read_image(s.image, channels, opts)
        else:
            image = to_channels(s.extra["array"], channels, f"sample {s.id}")
        target = np.asarray(s.extra["targets"], dtype=np.float32) if multilabel else int(s.label)
        return image, target

    if dicom and dicom.get("frames") == "split":
        samples = split_frames(samples)
    if len(classes) < 2:
        raise MedrunError(f"found {len(classes)} class(es) {classes}: classification needs at least 2 (data.classes)")
    return Dataset(samples, load, kind="classification", classes=list(classes), multilabel=multilabel)


def class_index(classes: list[str]) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(classes)}


def split_frames(samples: list[Sample]) -> list[Sample]:
    """One sample per frame of each multi-frame DICOM (`data.dicom.frames=split`); ids get `_frameNNN`.

    Frames without a group (patient) are grouped by their file."""
    out = []
    for s in samples:
        n = frame_count(s.image) if s.image is not None and s.image.suffix.lower() == ".dcm" else 1
        if n == 1:
            out.append(s)
        else:
            # frames of one file are one series: they stay on one side of every split
            out += [replace(s, id=f"{s.id}_frame{k:03d}", group=s.group or f"file_{s.id}", extra={**s.extra, "frame": k})
                    for k in range(n)]
    return out
