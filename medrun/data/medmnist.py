"""MedMNIST `.npz` files (train/val/test arrays): the official split, or pooled for k-fold."""
from __future__ import annotations

import numpy as np

from medrun.data.labelled import labelled_dataset
from medrun.data.samples import READERS, Sample, require_dir
from medrun.errors import MedrunError

PARTS = ("train", "val", "test")


@READERS.register("medmnist")
def read_medmnist(cfg):
    root = require_dir(cfg.root, "data.root", " (the folder holding the MedMNIST .npz file)")
    path = root / str(cfg.file)
    try:
        npz = np.load(path)
        arrays = {p: (npz[f"{p}_images"], npz[f"{p}_labels"]) for p in PARTS}
    except FileNotFoundError:
        raise MedrunError(f"data.file: {path} does not exist") from None
    except (KeyError, ValueError, OSError) as e:
        raise MedrunError(f"{path} is not a MedMNIST .npz with {{train,val,test}}_{{images,labels}} ({e})") from None
    n_labels = arrays["train"][1].shape[1]
    multilabel = n_labels > 1
    n_classes = n_labels if multilabel else int(max(a[1].max() for a in arrays.values())) + 1
    classes = [str(c) for c in cfg.classes] if cfg.get("classes") else [str(i) for i in range(n_classes)]
    samples = []
    for part, (images, labels) in arrays.items():
        subset = None if cfg.get("pooled") else part
        for i in range(len(images)):
            extra = {"array": images[i]}
            if multilabel:
                extra["targets"] = labels[i].astype(np.float32)
            samples.append(Sample(id=f"{part}_{i:05d}", subset=subset, label=None if multilabel else int(labels[i, 0]),
                                  extra=extra))
    return labelled_dataset(samples, cfg, classes, multilabel)
