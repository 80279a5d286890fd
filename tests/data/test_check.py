"""Bad data and config: a MedrunError naming the file or key, raised before any training."""

import numpy as np
import pytest
from PIL import Image

import medrun
from medrun.api import build_store
from medrun.data.check import check_data
from medrun.errors import MedrunError


def folder(tmp_path, n=3, size=(32, 32)):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray((rng.random(size) > 0.5).astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i}.png")
    return tmp_path


def store(root, *extra):
    return build_store(medrun.compose("train", ["data=folders", f"data.root={root}", "data.channels=1", *extra]))


def test_root_that_does_not_exist(tmp_path):
    with pytest.raises(MedrunError, match=r"data.root=.*nowhere does not exist"):
        store(tmp_path / "nowhere")


def test_root_not_set():
    with pytest.raises(MedrunError, match=r"data.root is not set"):
        build_store(medrun.compose("train", ["data=isbi2012"]))


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(MedrunError, match="no image files"):
        store(tmp_path)


def test_image_without_mask(tmp_path):
    root = folder(tmp_path)
    (root / "masks" / "1.png").unlink()
    with pytest.raises(MedrunError, match=r"image without mask: .*images/1.png"):
        store(root)


def test_mask_without_image(tmp_path):
    root = folder(tmp_path)
    (root / "images" / "2.png").unlink()
    with pytest.raises(MedrunError, match=r"mask without image: .*masks/2.png"):
        store(root)


def test_mask_size_differs(tmp_path):
    root = folder(tmp_path)
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(root / "masks" / "0.png")
    with pytest.raises(MedrunError, match=r"masks/0.png: mask size 32x16 differs from its image's 32x32"):
        store(root)


def test_truncated_png(tmp_path):
    root = folder(tmp_path, size=(64, 64))
    data = (root / "images" / "1.png").read_bytes()
    (root / "images" / "1.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MedrunError, match=r"cannot read .*images/1.png"):
        store(root)


def test_text_file_named_png(tmp_path):
    root = folder(tmp_path)
    (root / "images" / "2.png").write_text("not an image")
    with pytest.raises(MedrunError, match=r"cannot read .*images/2.png"):
        store(root)


def test_mask_values_outside_declared_classes(tmp_path):
    root = folder(tmp_path)
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "masks" / "0.png")
    with pytest.raises(MedrunError, match=r"masks/0.png: mask values \[7\] are not among"):
        store(root, "data.mask.threshold=null", "data.mask.values=[0,255]")


def test_rgb_mask_where_binary_expected(tmp_path):
    root = folder(tmp_path)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(root / "masks" / "1.png")
    with pytest.raises(MedrunError, match=r"masks/1.png: mask is a colour \(RGB\) image"):
        store(root)


def test_data_check_lists_every_bad_file(tmp_path):
    root = folder(tmp_path, n=6)
    (root / "images" / "1.png").write_text("oops")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "3.png")
    (root / "masks" / "4.png").unlink()
    (root / "images" / "5.png").unlink()
    cfg = medrun.compose("train", ["data=folders", f"data.root={root}", "data.channels=1"])
    report = check_data(cfg.data)
    problems = report["problems"]
    assert len(problems) == 4 and report["samples"] == 4
    assert problems[0].startswith("image without mask") and "images/4.png" in problems[0]
    assert problems[1].startswith("mask without image") and "masks/5.png" in problems[1]
    assert "images/1.png" in problems[2] and "masks/3.png" in problems[3]


def test_bad_value_names_the_key():
    cfg = medrun.compose("train", ["data=synthetic", "cv=kfold", "cv.folds=abc"])
    with pytest.raises(MedrunError, match=r"cv.folds='abc' is not an integer"):
        medrun.api.build_splits(cfg, build_store(cfg, preload=False))


def test_more_folds_than_groups(shared_data):
    cfg = medrun.compose("train", ["data=cvc_clinicdb", f"data.root={shared_data}/cvc_clinicdb_sample/CVC-ClinicDB",
                                   "cv.folds=3"])
    with pytest.raises(MedrunError, match=r"cv.folds=3 is more than the 2 groups"):
        medrun.api.build_splits(cfg, build_store(cfg, preload=False))


def test_unknown_registry_name_lists_choices():
    cfg = medrun.compose("train", ["model.name=resnet9000"])
    with pytest.raises(MedrunError, match=r"unknown model 'resnet9000' \(model.name\); valid: adversarial, cascade, ffvgg19, medmnist_resnet, sharp_unet, smp_unet, timm, vgg_gap"):
        medrun.build_model(cfg)


def test_counts_the_images_each_class_occurs_in_on_real_busi(shared_data):
    import csv

    cfg = medrun.compose("train", ["data=busi_siim", f"data.root={shared_data}/busi_siim"])
    report = check_data(cfg.data)
    rows = list(csv.DictReader(open(shared_data / "busi_siim" / "labels.csv")))
    with_mask = sum(r["has_mask"] == "1" for r in rows)  # the dataset's own table: 67 benign + 67 malignant
    assert report["images_with_class"] == {"lesion": with_mask} and with_mask == 134
    assert report["images_without_foreground"] == len(rows) - with_mask == 133 and report["problems"] == []


def test_identical_images_under_different_ids_are_reported_unless_one_group_holds_them(shared_data, tmp_path, capsys):
    from medrun.cli import main

    src = shared_data / "isbi2012/membrane/train/image"
    for cls, names in (("a", ("0", "1")), ("b", ("2", "copy_of_0"))):
        (tmp_path / cls).mkdir()
        for name in names:
            (tmp_path / cls / f"{name}.png").symlink_to(src / f"{name.removeprefix('copy_of_')}.png")
    report = check_data(medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}"]).data)
    assert report["identical_images"] == {"sets": 1, "examples": [["a_0", "b_copy_of_0"]]}
    assert main(["data", "check", "experiment=densenet121_folder", f"data.root={tmp_path}"]) == 0
    assert "note: 1 set(s) of identical images under different ids (e.g. a_0, b_copy_of_0)" in capsys.readouterr().out
    (tmp_path / "b" / "copy_of_0.png").unlink()  # the same pixels in one patient's folder: kept together
    (tmp_path / "a" / "p1").mkdir()
    for name in ("x", "y"):
        (tmp_path / "a" / "p1" / f"{name}.png").symlink_to(src / "5.png")
    grouped = check_data(medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}",
                                                  "data.group_by_subfolder=true"]).data)
    assert grouped["identical_images"] == {"sets": 0, "examples": []}
