"""DICOM decoding with pydicom: modality LUT (CT -> Hounsfield units), VOI LUT or a fixed window,
MONOCHROME1 inversion, then 8-bit. Tag values never leave this module except the pixel data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medrun.data.pixel_limit import check_pixel_count
from medrun.errors import MedrunError

DECODER_HINT = "install a decoder: pip install 'medrun[dicom]' (pylibjpeg with its libjpeg and openjpeg plugins)"


def _open(path: Path, pixels: bool = True) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise MedrunError(f"file not found: {path}") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise MedrunError(f"{path} is not a readable DICOM file ({e})") from None


def frame_count(path: Path) -> int:
    return int(_open(path, pixels=False).get("NumberOfFrames", 1) or 1)


def hounsfield(ds: pydicom.Dataset, path: Path, frames: str = "reject", frame: int | None = None) -> np.ndarray:
    """Stored pixels through the modality LUT (RescaleSlope/Intercept): HU for CT.

    Multi-frame files: `frames="reject"` fails, `"first"` takes frame 0, `frame=k` takes frame k (the
    readers' `frames="split"` makes one sample per frame).
    """
    if "PixelData" not in ds:
        raise MedrunError(f"{path}: DICOM has no pixel data (PixelData tag missing); remove it from the dataset")
    if ds.get("Rows") is None or ds.get("Columns") is None:
        raise MedrunError(f"{path}: DICOM has no Rows / Columns: its pixel data cannot be read")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    # the whole file is bounded, whichever frame is wanted: frames x rows x columns is what it can expand to
    check_pixel_count(path, int(ds.Rows) * int(ds.Columns) * n_frames)
    if n_frames > 1 and frame is None and frames not in ("first",):
        raise MedrunError(f"{path}: multi-frame DICOM ({n_frames} frames); set data.dicom.frames=first, or "
                          "data.dicom.frames=split for one sample per frame")
    if n_frames > 1 and not 0 <= (frame or 0) < n_frames:
        raise MedrunError(f"{path}: frame {frame} of a {n_frames}-frame DICOM does not exist")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        if n_frames > 1:  # decode the one frame asked for, not every frame of the file for each sample
            ds.pixel_array_options(index=frame or 0)
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError when no plugin decodes the syntax
        if ts is not None and ts.is_compressed:
            raise MedrunError(f"{path}: compressed transfer syntax '{ts.name}' ({ts}) has no decoder installed; "
                              f"{DECODER_HINT}") from None
        raise MedrunError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from None
    return apply_modality_lut(arr, ds).astype(np.float32)


def _voi_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The output range of the file's VOI transform (PS3.3 C.11.2): a VOI LUT's entries span
    [0, 2^bits - 1]; windowing maps onto the stored range, after the rescale when there is one."""
    if "VOILUTSequence" in ds:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def read_dicom(path: Path, window=None, frames: str = "reject", frame: int | None = None) -> np.ndarray:
    """HxWxC uint8. Greyscale: a fixed `window` [center, width] if given, else the file's VOI LUT or window
    (scaled by the VOI output range, so the window's fixed scale is kept), else the image's min-max.
    MONOCHROME1 and Presentation LUT Shape INVERSE are inverted so that bright means high."""
    ds = _open(path)
    values = hounsfield(ds, path, frames, frame)
    if values.ndim == 3:  # colour (RGB/YBR converted by pydicom): no LUTs apply
        return np.clip(values, 0, 255).astype(np.uint8)
    if window is not None:
        center, width = (float(v) for v in window)
        lo = center - width / 2
        x = np.clip((values - lo) / width, 0, 1)
    elif "VOILUTSequence" in ds or "WindowCenter" in ds:
        if "VOILUTSequence" in ds:  # a LUT is indexed by integer input values
            values = np.rint(values).astype(np.int64)
        out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        lo, hi = _voi_range(ds)
        x = np.clip((out - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(out)
    else:
        lo, hi = float(values.min()), float(values.max())
        x = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1" or ds.get("PresentationLUTShape") == "INVERSE":
        x = 1 - x
    return np.round(x * 255).astype(np.uint8)[:, :, None]


def patient_key(path: Path) -> str | None:
    """The file's PatientID, for grouping splits in memory only; never log or save it."""
    return _open(path, pixels=False).get("PatientID") or None
