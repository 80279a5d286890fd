"""DICOM decoding against pydicom's own LUT functions, on real CT slices and pydicom's bundled files."""
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from medrun.data.dicom import hounsfield, read_dicom
from medrun.errors import MedrunError

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # bundled: nothing is downloaded


def ct_slice(shared_data):
    return sorted((shared_data / "dicom_ct" / "dicom_dir").glob("*.dcm"))[0]


def test_hounsfield_units_match_pydicom(shared_data):
    path = ct_slice(shared_data)
    ds = pydicom.dcmread(path)
    hu = hounsfield(ds, path)
    assert np.array_equal(hu, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert ds.RescaleIntercept == -1024 and hu.min() < -900  # air is about -1000 HU


def test_fixed_window_maps_center_and_edges(shared_data):
    path = ct_slice(shared_data)
    hu = hounsfield(pydicom.dcmread(path), path)
    img = read_dicom(path, window=[40, 400])[..., 0].astype(int)
    assert img.shape == hu.shape
    assert (img[hu <= -160] == 0).all() and (img[hu >= 240] == 255).all()  # outside [c - w/2, c + w/2]
    inside = (hu > -100) & (hu < 200)
    expected = np.round((hu[inside] + 160) / 400 * 255)
    assert np.abs(img[inside] - expected).max() <= 1


def test_the_file_window_is_used_without_a_window_option():
    path = PYDICOM_FILES / "MR_small.dcm"  # carries WindowCenter/WindowWidth; unsigned, no rescale
    ds = pydicom.dcmread(path)
    img = read_dicom(path)[..., 0].astype(int)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    y = ((ds.pixel_array - (c - 0.5)) / (w - 1) + 0.5).clip(0, 1)  # PS3.3 C.11.2.1.2, onto [0, 1]
    assert np.abs(img - np.round(y * 255)).max() <= 1


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    normal = read_dicom(PYDICOM_FILES / "CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    inverted = read_dicom(tmp_path / "mono1.dcm")
    assert np.array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_compressed_dicom_decodes_losslessly_or_names_the_missing_decoder(monkeypatch):
    compressed = PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm"
    try:
        pydicom.dcmread(compressed).pixel_array
        decodable = True
    except Exception:
        decodable = False
    if decodable:  # decoders installed (medrun[dicom]): lossless means identical to the uncompressed file
        assert np.array_equal(read_dicom(compressed), read_dicom(PYDICOM_FILES / "MR_small.dcm"))

        def no_decoder(self):
            raise RuntimeError("Unable to decode the pixel data: no plugin available")

        monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(MedrunError, match=r"compressed transfer syntax 'JPEG-LS Lossless Image Compression'.*medrun\[dicom\]"):
        read_dicom(compressed)


def test_no_pixel_data_and_multi_frame_are_rejected(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(MedrunError, match=r"nopixels.dcm: DICOM has no pixel data"):
        read_dicom(tmp_path / "nopixels.dcm")
    with pytest.raises(MedrunError, match=r"multi-frame DICOM \(15 frames\); set data.dicom.frames=first"):
        read_dicom(PYDICOM_FILES / "rtdose.dcm")
    assert read_dicom(PYDICOM_FILES / "rtdose.dcm", frames="first").ndim == 3


def test_not_a_dicom_file(tmp_path):
    (tmp_path / "fake.dcm").write_text("hello")
    with pytest.raises(MedrunError, match="fake.dcm is not a readable DICOM file"):
        read_dicom(tmp_path / "fake.dcm")


def test_multi_frame_files_can_be_split_into_samples(tmp_path):
    import medrun
    from medrun.data import build_dataset

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"dose_{cls}.dcm").write_bytes((PYDICOM_FILES / "rtdose.dcm").read_bytes())
    cfg = medrun.compose("train", ["data=class_folders", f"data.root={tmp_path}", "data.dicom.frames=split"])
    ds = build_dataset(cfg.data)
    assert len(ds.samples) == 30 and ds.samples[0].id == "a_dose_a_frame000" and ds.samples[-1].id == "b_dose_b_frame014"
    first, last = ds.load(ds.samples[0])[0], ds.load(ds.samples[14])[0]
    assert first.shape == last.shape and not np.array_equal(first, last)
    direct = read_dicom(PYDICOM_FILES / "rtdose.dcm", frame=14)
    assert np.array_equal(np.repeat(direct, 3, axis=2), last)


def test_a_multi_frame_file_is_bounded_by_all_its_frames_and_decodes_one(monkeypatch):
    from medrun.data.pixel_limit import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")  # rtdose.dcm: 15 frames of 10 x 10 = 1,500 pixels
    for options in ({"frames": "first"}, {"frame": 3}):
        with pytest.raises(MedrunError, match=r"rtdose.dcm: 1,500 pixels is more than the limit of 1,000"):
            read_dicom(PYDICOM_FILES / "rtdose.dcm", **options)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1500")
    decoded = []
    original = pydicom.Dataset.pixel_array_options
    monkeypatch.setattr(pydicom.Dataset, "pixel_array_options",
                        lambda self, **kw: decoded.append(kw) or original(self, **kw))
    frame = read_dicom(PYDICOM_FILES / "rtdose.dcm", frame=3)
    assert frame.shape == (10, 10, 1) and decoded == [{"index": 3}]  # only that frame is decoded
