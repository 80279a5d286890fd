"""`medrun data check`: read every sample once, describe the dataset and list every bad file."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from omegaconf import DictConfig

from medrun.data.build import reading_config
from medrun.data.images import pixel_digest, read_array
from medrun.data.samples import READERS, Dataset, collecting_problems
from medrun.errors import MedrunError


def check_data(cfg: DictConfig) -> dict:
    """Read every sample of the `data` config (data.translation_only classes too); every problem is listed, none
    stops the check."""
    cfg = reading_config(cfg)
    with collecting_problems() as listing:
        dataset = READERS.get(cfg.reader)(cfg)
    classes = [str(c) for c in (cfg.get("classes") or dataset.classes or [])]
    report = check_dataset(dataset, classes)
    report["problems"] = listing + report["problems"]
    return report


def check_dataset(dataset: Dataset, class_names: list[str]) -> dict:
    """Counts, sizes, channels, stored mask values, class balance (segmentation: also the images each foreground
    class occurs in, and the images with no foreground), groups, and the list of problems."""
    sizes, channels, mask_values, problems = Counter(), Counter(), set(), []
    pixels = np.zeros(len(class_names), dtype=np.int64)
    images_with = np.zeros(len(class_names), dtype=np.int64)  # segmentation: images where each class occurs
    empty = 0  # segmentation: images with no foreground pixel
    copies = defaultdict(list)  # pixel digest -> samples
    for s in dataset.samples:
        try:
            stored = s.image is not None and s.image.suffix.lower() != ".dcm"  # DICOM: decoded size
            if stored:
                raw = read_array(s.image, intensities=True)
                sizes[f"{raw.shape[0]}x{raw.shape[1]}"] += 1
                channels[1 if raw.ndim == 2 else raw.shape[2]] += 1
            image, target = dataset.load(s)
            copies[pixel_digest(image)].append(s)
            if not stored:
                sizes[f"{image.shape[0]}x{image.shape[1]}"] += 1
                channels[image.shape[2]] += 1
            if dataset.kind == "segmentation":
                if s.mask is not None:
                    mask_values.update(np.unique(read_array(s.mask)).tolist())
                else:
                    mask_values.update(np.unique(target).tolist())
                counts = np.bincount(target.ravel(), minlength=len(class_names))[: len(class_names)]
                pixels += counts
                images_with += counts > 0
                empty += int(counts[1:].sum() == 0)
            else:
                pixels += np.asarray(target, dtype=np.int64) if np.ndim(target) else np.eye(len(class_names), dtype=np.int64)[target]
        except MedrunError as e:
            problems.append(str(e))
    groups = {s.group for s in dataset.samples if s.group is not None}
    subsets = Counter(s.subset for s in dataset.samples if s.subset)
    report = {
        "samples": len(dataset.samples),
        "subsets": dict(subsets),
        "image_sizes_hxw": dict(sizes.most_common()),  # height x width, the order of data.image_size
        "channels": dict(channels),
        "mask_values": (sorted(mask_values) if len(mask_values) <= 16
                        else f"{len(mask_values)} distinct values from {min(mask_values)} to {max(mask_values)}"),
        # segmentation: share of pixels per class; classification: share of samples per class
        "class_balance": {n: round(float(p), 4) for n, p in zip(class_names, pixels / max(pixels.sum(), 1))},
        "groups": len(groups),
        "problems": problems,
    }
    # the same pixels under several ids, not kept on one side of a split by a shared group: copies can land in a
    # fold's training and test parts alike
    identical = [[s.id for s in same] for same in copies.values()
                 if len(same) > 1 and (same[0].group is None or len({s.group for s in same}) > 1)]
    report["identical_images"] = {"sets": len(identical), "examples": identical[:5]}
    if dataset.kind == "segmentation":
        # the share of images without a lesion decides how far an all-empty prediction gets (see reference rows)
        report["images_with_class"] = {n: int(c) for n, c in zip(class_names[1:], images_with[1:])}
        report["images_without_foreground"] = empty
    else:
        del report["mask_values"]
    return report
