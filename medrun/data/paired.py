"""Datasets of image files with mask files matched by stem: the shared loader of the file readers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from medrun.data.images import check_pair, read_image, read_mask, stems
from medrun.data.samples import Dataset, Sample, problem
from medrun.errors import MedrunError


def pair_samples(
    image_dir: Path,
    mask_dir: Path,
    *,
    id_prefix: str = "",
    subset: str | None = None,
    group_of: Callable[[str], str | None] = lambda stem: None,
    mask_suffix: str = "",
) -> list[Sample]:
    """Match images and masks by file stem, a mask's stem being the image's plus `mask_suffix` (ISIC's
    "_segmentation"); an unmatched file on either side is an error."""
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise MedrunError(f"folder not found: {d}; check data.root and the dataset layout in README.md")
    images, masks, unsuffixed = stems(image_dir), {}, []
    for stem, path in stems(mask_dir).items():
        if stem.endswith(mask_suffix):
            masks[stem.removesuffix(mask_suffix)] = path
        else:
            unsuffixed.append(path)
    if not images:
        raise MedrunError(f"no image files (png/jpg/jpeg/tif/tiff/bmp) in {image_dir}")
    for stem in sorted(set(images) - set(masks)):
        problem(f"image without mask: {images[stem]} (no file with stem {stem + mask_suffix!r} in {mask_dir})")
    for stem in sorted(set(masks) - set(images)):
        problem(f"mask without image: {masks[stem]} (no file with stem {stem!r} in {image_dir}"
                f"{_suffix_hint(stem, images)})")
    for path in unsuffixed:
        problem(f"mask without image: {path} (its stem does not end with data.mask_suffix={mask_suffix!r})")
    return [
        Sample(id=id_prefix + s, image=images[s], mask=masks[s], group=group_of(s), subset=subset)
        for s in sorted(set(images) & set(masks), key=_natural)
    ]


def _suffix_hint(stem: str, images: dict) -> str:
    """The data.mask_suffix that would pair an unpaired mask: its stem is an image's plus a separated suffix."""
    for i in range(1, len(stem)):
        if stem[i] in "_-. " and stem[:i] in images:
            return f"; data.mask_suffix={stem[i:]} would pair it with {images[stem[:i]].name}"
    return ""


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
