"""Decoding image and mask files into numpy arrays, with errors that name the file."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from medrun.data.pixel_limit import check_pixel_count
from medrun.errors import MedrunError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CLASSIFICATION_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")
# PIL modes whose stored values are not the intensities they stand for, and the mode that holds those
INTENSITY_MODES = {"P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "1": "L",
                   "LA": "L"}
TIFF_INTENSITIES = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)


def read_array(path: Path, dicom: dict | None = None, intensities: bool = False) -> np.ndarray:
    """Read an image file as stored (palette PNGs keep their indices, as masks need); TIFF through tifffile;
    DICOM (.dcm) through medrun.data.dicom with the `dicom` options (window, frames). `intensities=True` (images)
    converts the modes of INTENSITY_MODES (palette, CMYK, YCbCr, ..., gray with alpha) to gray or RGB, inverts
    a TIFF whose 0 is white, and refuses other TIFFs that do not store intensities (palette, CMYK, Lab)."""
    if path.suffix.lower() == ".dcm":
        from medrun.data.dicom import read_dicom

        return read_dicom(path, **(dicom or {}))
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            # PIL mis-reads the RGB TIFFs of CVC-ClinicDB; tifffile reads them as stored.
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                check_pixel_count(path, int(np.prod(page.shape[:2])))
                array = np.asarray(tif.asarray())
                if intensities and page.photometric == tifffile.PHOTOMETRIC.MINISWHITE and array.dtype.kind == "u":
                    return np.iinfo(array.dtype).max - array  # 0 stands for white
                if intensities and page.photometric not in TIFF_INTENSITIES:
                    raise MedrunError(f"{path}: a {page.photometric.name} TIFF does not store gray or RGB "
                                      "intensities; save it as a grayscale or RGB image")
                return array
        with Image.open(path) as im:
            check_pixel_count(path, im.size[0] * im.size[1])
            im.load()
            return np.asarray(im.convert(INTENSITY_MODES[im.mode]) if intensities and im.mode in INTENSITY_MODES
                              else im)
    except FileNotFoundError:
        raise MedrunError(f"file not found: {path}") from None
    except MedrunError:
        raise
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


def to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    """8-bit pixels, as every pipeline downstream expects: 16-bit images (PNG, TIFF; PIL may hand them over as
    32-bit integers) are scaled by their bit depth, 65535 -> 255, instead of reaching the model as 0-65535 / 255."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer) and image.size and image.min() >= 0 and image.max() <= 65535:
        return np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    low, high = (image.min(), image.max()) if image.size else (0, 0)
    raise MedrunError(f"{path}: {image.dtype} pixels (values {low}..{high}) have no bit depth to scale by; "
                      "save the image as 8- or 16-bit unsigned integers")


def read_image(path: Path, channels: int, dicom: dict | None = None) -> np.ndarray:
    return to_channels(to_uint8(read_array(path, dicom, intensities=True), path), channels, path)


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
        if np.issubdtype(m.dtype, np.integer) and threshold > np.iinfo(m.dtype).max:
            raise MedrunError(f"{path}: data.mask.threshold={threshold} is above the largest value this {m.dtype} mask "
                              f"can hold ({np.iinfo(m.dtype).max}), so no pixel would be foreground; lower it")
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


def pixel_digest(image: np.ndarray) -> bytes:
    """A digest of an image's shape and pixels: equal for copies of an image under other names or formats."""
    return hashlib.sha1(f"{image.shape}".encode() + np.ascontiguousarray(image).tobytes()).digest()


def listed(path: Path, root: Path) -> bool:
    """Whether a path under `root` is the user's: not hidden (.ipynb_checkpoints, macOS's ._NAME.png copies of
    each file's metadata) and not a system folder such as __MACOSX."""
    return not any(part.startswith((".", "__")) for part in path.relative_to(root).parts)


def stems(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the image files in `folder` (not recursive, hidden files left out)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and listed(p, folder):
            if p.stem in out:
                raise MedrunError(f"{folder}: two files share the stem {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out
