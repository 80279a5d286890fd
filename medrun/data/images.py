"""Decoding image and mask files into numpy arrays, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from medrun.errors import MedrunError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CLASSIFICATION_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")


def read_array(path: Path, dicom: dict | None = None) -> np.ndarray:
    """Read an image file as stored (palette PNGs keep their indices); TIFF through tifffile;
    DICOM (.dcm) through medrun.data.dicom with the `dicom` options (window, frames)."""
    if path.suffix.lower() == ".dcm":
        from medrun.data.dicom import read_dicom

        return read_dicom(path, **(dicom or {}))
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            # PIL mis-reads the RGB TIFFs of CVC-ClinicDB; tifffile reads them as stored.
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as im:
            im.load()
            return np.asarray(im)
    except FileNotFoundError:
        raise MedrunError(f"file not found: {path}") from None
    except Exception as e:  # PIL/tifffile raise many types for truncated or foreign files
        raise MedrunError(f"cannot read {path}: {type(e).__name__}: {e}; replace or remove the file") from None


def to_channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """Return HxWxC with C == `channels` (gray <-> RGB conversion, alpha dropped)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise MedrunError(f"{path}: expected a 2-D image, got shape {image.shape}")
    c = image.shape[2]
    if c == 4:
        image, c = image[:, :, :3], 3
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if c == 3 and channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]
    raise MedrunError(f"{path}: has {c} channels, data.channels={channels}")


def read_image(path: Path, channels: int, dicom: dict | None = None) -> np.ndarray:
    return to_channels(read_array(path, dicom), channels, path)


def read_mask(path: Path, num_classes: int, threshold: int | None, values: list[int] | None) -> np.ndarray:
    """Decode a mask into class indices (HxW uint8).

    Binary masks are thresholded (`threshold`: value >= threshold is foreground); otherwise `values`
    lists the stored value of each class (index = class) and any other value is an error.
    """
    m = read_array(path)
    if m.ndim == 3:
        if m.shape[2] >= 3 and not (np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 0], m[..., 2])):
            raise MedrunError(
                f"{path}: mask is a colour (RGB) image, expected one value per pixel; "
                "save it as a single-channel or palette PNG"
            )
        m = m[..., 0]
    if threshold is not None:
        return (m >= threshold).astype(np.uint8)
    values = list(values) if values is not None else list(range(num_classes))
    out = np.full(m.shape, 255, dtype=np.uint8)
    for cls, v in enumerate(values):
        out[m == v] = cls
    bad = np.unique(m[out == 255])
    if bad.size:
        raise MedrunError(
            f"{path}: mask values {bad[:8].tolist()} are not among the declared classes' values {values} "
            "(data.mask.values); fix the mask or set data.mask.threshold for binary masks"
        )
    return out


def check_pair(image: np.ndarray, mask: np.ndarray, mask_path: Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise MedrunError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image's "
            f"{image.shape[1]}x{image.shape[0]}; masks must match their images pixel for pixel"
        )


def stems(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the image files in `folder` (not recursive)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in out:
                raise MedrunError(f"{folder}: two files share the stem {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out
