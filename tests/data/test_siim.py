"""The SIIM-ACR layout: the RLE codec on every real row, the reader on a generated folder."""
import csv
import shutil

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

import medrun
from medrun.data.check import check_data
from medrun.data.rle import decode, encode
from medrun.errors import MedrunError


def sample_rows(shared_data):
    with open(shared_data / "siim_rle" / "train-rle-sample.csv", newline="") as f:
        return list(csv.reader(f))


def test_rle_codec_round_trips_every_real_row(shared_data):
    rows = sample_rows(shared_data)
    assert rows[0] == ["ImageId", " EncodedPixels"]  # the competition's header quirk
    areas = []
    for image_id, rle in rows[1:]:
        mask = decode(rle, 1024, 1024)
        assert encode(mask) == rle.strip()
        areas.append(int(mask.sum()))
    assert sum(a == 0 for a in areas) == 4 and all(a > 100 for a in areas if a)
    # column-major: the first run of a row starts at pixel (start % H, start // H)
    start = int(rows[3][1].split()[0])
    assert decode(rows[3][1], 1024, 1024)[start % 1024, start // 1024] == 1
    for bad, message in (("1 2 3", "odd number"), ("5 -2", "negative"), ("1048570 20", "runs past the image"),
                         ("1 x", "other than integers"),
                         (f"{2**64 - 10} 5 5 5", "larger than any image's pixel count")):  # would wrap round
        with pytest.raises(MedrunError, match=message):
            decode(bad, 1024, 1024)


def write_siim(root, rows, size=1024, extra_images=(), missing_images=()):
    """A SIIM-ACR folder with generated DICOMs (one per ImageId, 8-bit, `size` x `size`) and train-rle.csv."""
    images = ({i for i, _ in rows} | set(extra_images)) - set(missing_images)
    rng = np.random.default_rng(0)
    for n, image_id in enumerate(sorted(images)):
        folder = root / "dicom-images-train" / f"study{n}" / f"series{n}"
        folder.mkdir(parents=True)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = image_id
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPInstanceUID, ds.SOPClassUID = image_id, meta.MediaStorageSOPClassUID
        ds.PatientID, ds.PatientName, ds.Modality = f"PAT-{n:03d}", "Doe^Jane", "CR"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = rng.integers(0, 255, (size, size), dtype=np.uint8).tobytes()
        ds.save_as(folder / f"{image_id}.dcm", enforce_file_format=True)
    with open(root / "train-rle.csv", "w", newline="") as f:
        f.write("ImageId, EncodedPixels\n")
        for image_id, rle in rows:
            f.write(f"{image_id}, {rle.strip()}\n")


def test_reader_on_a_generated_siim_folder_merges_objects_and_lists_problems(shared_data, tmp_path):
    rows = [(r[0], r[1]) for r in sample_rows(shared_data)[1:]]
    write_siim(tmp_path / "ok", rows)
    cfg = medrun.compose("train", ["experiment=cascade_siim", f"data.root={tmp_path}/ok"])
    store = medrun.api.build_store(cfg, preload=False)
    assert len(store.samples) == 7 and sorted(s.id for s in store.samples) == sorted({i for i, _ in rows})
    two = [i for i in {i for i, _ in rows} if sum(j == i for j, _ in rows) == 2][0]
    image, mask = store.dataset.load(store.samples[store.index[two]])
    expected = np.zeros((1024, 1024), np.uint8)
    for i, rle in rows:
        if i == two:
            expected |= decode(rle, 1024, 1024)
    assert image.shape == (1024, 1024, 3) and np.array_equal(mask, expected)  # both objects, merged
    assert sum(s.label for s in store.samples) == 3  # positives: images with any object
    # broken layout: an image without a row, a row without an image, a malformed RLE: all listed at once
    broken = rows[:3] + [(rows[3][0], "5 -2"), ("1.2.3.4.5", "-1")]
    write_siim(tmp_path / "bad", broken, extra_images=["9.9.9.9"], missing_images=["1.2.3.4.5"])
    report = check_data(medrun.compose("train", ["experiment=cascade_siim", f"data.root={tmp_path}/bad"]).data)
    problems = "\n".join(report["problems"])
    assert "1 image(s) without a row in train-rle.csv: 9.9.9.9" in problems
    assert "1 row(s) of train-rle.csv without a DICOM under dicom-images-train: 1.2.3.4.5" in problems
    assert "1 malformed RLE row(s) in train-rle.csv" in problems and "negative" in problems
    with pytest.raises(MedrunError, match="image\\(s\\) without a row"):
        medrun.api.build_store(medrun.compose("train", ["experiment=cascade_siim", f"data.root={tmp_path}/bad"]))
    # an ImageId both empty (' -1') and with an object row; one SOP file name in two series
    positive = next(r for r in rows if r[1].strip() != "-1")
    others = [r for r in rows if r[0] != positive[0]][:3]
    write_siim(tmp_path / "mixed", [*others, (positive[0], "-1"), positive])
    copy = next((tmp_path / "mixed" / "dicom-images-train").rglob(f"{others[0][0]}.dcm"))
    other = tmp_path / "mixed" / "dicom-images-train" / "studyX" / "seriesX"
    other.mkdir(parents=True)
    shutil.copy(copy, other / copy.name)
    report = check_data(medrun.compose("train", ["experiment=cascade_siim", f"data.root={tmp_path}/mixed"]).data)
    problems = "\n".join(report["problems"])
    assert f"1 ImageId(s) with several DICOM files under dicom-images-train: {others[0][0]}" in problems
    assert f"{positive[0]} (an empty-mask row ' -1' beside object rows" in problems
