"""Datasets of image files with mask files matched by stem: the shared loader of the file readers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from medrun.data.images import check_pair, read_image, read_mask, stems
from medrun.data.samples import Dataset, Sample
from medrun.errors import MedrunError


def pair_samples(
    image_dir: Path,
    mask_dir: Path,
    *,
    id_prefix: str = "",
    subset: str | None = None,
    group_of: Callable[[str], str | None] = lambda stem: None,
) -> list[Sample]:
    """Match images and masks by file stem; an unmatched file on either side is an error."""
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise MedrunError(f"folder not found: {d}; check data.root and the dataset layout in README.md")
    images, masks = stems(image_dir), stems(mask_dir)
    if not images:
        raise MedrunError(f"no image files (png/jpg/jpeg/tif/tiff/bmp) in {image_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise MedrunError(f"image without mask: {images[missing[0]]} (no file with stem {missing[0]!r} in {mask_dir})"
                          + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise MedrunError(f"mask without image: {masks[orphans[0]]} (no file with stem {orphans[0]!r} in {image_dir})"
                          + (f" and {len(orphans) - 1} more" if len(orphans) > 1 else ""))
    return [
        Sample(id=id_prefix + s, image=images[s], mask=masks[s], group=group_of(s), subset=subset)
        for s in sorted(images, key=_natural)
    ]


def _natural(stem: str):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def pair_loader(cfg: DictConfig):
    """Return `load(sample) -> (image HxWxC, mask HxW class indices)` for the data config."""
    channels = int(cfg.channels)
    num_classes = len(cfg.classes)
    threshold = cfg.mask.get("threshold")
    values = cfg.mask.get("values")
    invert = bool(cfg.mask.get("invert", False))

    def load(sample: Sample):
        image = read_image(sample.image, channels)
        mask = read_mask(sample.mask, num_classes, threshold, values)
        if invert:
            mask = 1 - mask
        check_pair(image, mask, sample.mask)
        return image, mask

    return load


def paired_dataset(cfg: DictConfig, parts: list[dict]) -> Dataset:
    samples = [s for part in parts for s in pair_samples(**part)]
    return Dataset(samples, pair_loader(cfg))
