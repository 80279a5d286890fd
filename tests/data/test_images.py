"""medrun/data/images.py: 16-bit images are scaled by their bit depth, and stored values that are not intensities
(palette indices, CMYK) become the intensities they stand for, in training and predict alike."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from medrun.data.images import read_array, read_image
from medrun.errors import MedrunError


def test_16_bit_png_and_tiff_are_scaled_by_their_bit_depth(tmp_path):
    pixels = np.array([[0, 257, 32768], [65535, 1000, 4095]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    for name in ("a.png", "a.tif"):
        image = read_image(tmp_path / name, 1)
        assert image.dtype == np.uint8 and image.shape == (2, 3, 1)
        assert image[..., 0].tolist() == [[0, 1, 128], [255, 4, 16]]  # value * 255 / 65535, rounded
    assert read_image(tmp_path / "a.png", 3).shape == (2, 3, 3)
    tifffile.imwrite(tmp_path / "f.tif", pixels.astype(np.float32) / 7)
    with pytest.raises(MedrunError, match=r"f.tif: float32 pixels .* have no bit depth to scale by"):
        read_image(tmp_path / "f.tif", 1)


def test_a_16_bit_dataset_trains_on_0_1_inputs(tmp_path):
    import medrun

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray((rng.random((32, 32)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i}.png")
    cfg = medrun.compose("train", ["data=folders", f"data.root={tmp_path}", "data.channels=1", "data.image_size=[32,32]", "cv.folds=2"])
    dm = medrun.build_datamodule(cfg, fold=0)
    dm.setup("fit")
    x = next(iter(dm.train_dataloader()))["image"]
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0.5


def test_a_decompression_bomb_is_refused_from_its_header_in_every_format(tmp_path, monkeypatch):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medrun.data.pixel_limit import MAX_PIXELS_ENV

    big = np.zeros((300, 400), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "a.png")
    Image.fromarray(big).save(tmp_path / "a.jpg")
    tifffile.imwrite(tmp_path / "a.tif", big, compression="zlib")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 300, 400, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = big.tobytes()
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    for name in ("a.png", "a.jpg", "a.tif", "a.dcm"):
        assert read_image(tmp_path / name, 1).shape == (300, 400, 1)
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")  # 120,000 pixels each: over the limit
    for name in ("a.png", "a.jpg", "a.tif", "a.dcm"):
        with pytest.raises(MedrunError, match=rf"{name}: 120,000 pixels is more than the limit of 100,000 .* "
                                              rf"raise it with {MAX_PIXELS_ENV}="):
            read_image(tmp_path / name, 1)


def test_palette_cmyk_and_gray_alpha_images_are_read_as_the_intensities_they_stand_for(tmp_path, shared_data):
    gray = np.load(shared_data / "medmnist/breastmnist.npz")["train_images"][0]  # a real ultrasound image
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=2)
    Image.fromarray(gray).quantize(64).save(tmp_path / "p.png")  # palette: indices 0..63 stored
    tifffile.imwrite(tmp_path / "c.tif", np.dstack([rgb, gray]), photometric="separated")
    tifffile.imwrite(tmp_path / "w.tif", 255 - gray, photometric="miniswhite")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    palette = read_image(tmp_path / "p.png", 1)[..., 0]
    assert read_array(tmp_path / "p.png").max() < 64  # as stored: indices, which masks need
    assert np.abs(palette.astype(int) - gray).mean() < 3  # read as an image: grey levels near the original
    assert np.abs(read_image(tmp_path / "c.jpg", 3).astype(int) - rgb).mean() < 8  # not C, M, Y as R, G, B
    assert np.array_equal(read_image(tmp_path / "la.png", 1)[..., 0], gray)
    assert np.array_equal(read_image(tmp_path / "w.tif", 1)[..., 0], gray)  # 0 stands for white there
    with pytest.raises(MedrunError, match=r"c.tif: a SEPARATED TIFF does not store gray or RGB intensities"):
        read_image(tmp_path / "c.tif", 3)


def test_a_mask_threshold_no_pixel_of_the_mask_can_reach_is_refused(shared_data):
    from medrun.data.images import read_mask

    label = shared_data / "isbi2012/membrane/train/label/0.png"  # 8-bit, 0 / 255
    assert read_mask(label, 2, 255, None).any()
    with pytest.raises(MedrunError, match=r"0.png: data.mask.threshold=300 is above the largest value this uint8 "
                                          r"mask can hold \(255\)"):
        read_mask(label, 2, 300, None)
