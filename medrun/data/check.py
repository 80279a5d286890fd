"""`medrun data check`: read every sample once, describe the dataset and list every bad file."""
from __future__ import annotations

from collections import Counter

import numpy as np

from medrun.data.images import read_array
from medrun.data.samples import Dataset
from medrun.errors import MedrunError


def check_dataset(dataset: Dataset, class_names: list[str]) -> dict:
    """Counts, sizes, channels, stored mask values, class balance, groups, and the list of problems."""
    sizes, channels, mask_values, problems = Counter(), Counter(), set(), []
    pixels = np.zeros(len(class_names), dtype=np.int64)
    for s in dataset.samples:
        try:
            if s.image is not None:
                raw = read_array(s.image)
                sizes[f"{raw.shape[1]}x{raw.shape[0]}"] += 1
                channels[1 if raw.ndim == 2 else raw.shape[2]] += 1
                mask_values.update(np.unique(read_array(s.mask)).tolist())
            image, mask = dataset.load(s)
            if s.image is None:
                sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
                channels[image.shape[2]] += 1
                mask_values.update(np.unique(mask).tolist())
            pixels += np.bincount(mask.ravel(), minlength=len(class_names))[: len(class_names)]
        except MedrunError as e:
            problems.append(str(e))
    groups = {s.group for s in dataset.samples if s.group is not None}
    subsets = Counter(s.subset for s in dataset.samples if s.subset)
    return {
        "samples": len(dataset.samples),
        "subsets": dict(subsets),
        "image_sizes": dict(sizes.most_common()),
        "channels": dict(channels),
        "mask_values": (sorted(mask_values) if len(mask_values) <= 16
                        else f"{len(mask_values)} distinct values from {min(mask_values)} to {max(mask_values)}"),
        "class_balance": {n: float(p) for n, p in zip(class_names, pixels / max(pixels.sum(), 1))},
        "groups": len(groups),
        "problems": problems,
    }
