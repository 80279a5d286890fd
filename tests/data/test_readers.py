"""Every reader on the real files in ../shared/data."""
import numpy as np
import pytest
from omegaconf import OmegaConf

import medrun
from medrun.data import build_dataset
from medrun.data.check import check_dataset
from medrun.data.cvc import sequence_of
from medrun.data.samples import collecting_problems
from medrun.errors import MedrunError


def dataset(name, root, *extra):
    cfg = medrun.compose("train", [f"data={name}", f"data.root={root}", *extra])
    return build_dataset(cfg.data), cfg


def test_isbi2012(shared_data):
    ds, _ = dataset("isbi2012", shared_data / "isbi2012")
    assert len(ds.samples) == 30 and ds.samples[0].id == "0" and ds.samples[-1].id == "29"
    image, mask = ds.load(ds.samples[0])
    assert image.shape == (512, 512, 1) and mask.shape == (512, 512)
    assert set(np.unique(mask)) == {0, 1}
    assert 0.6 < mask.mean() < 0.9  # cell interior (label 255, ~78 %) is the foreground by default
    inverted, _ = dataset("isbi2012", shared_data / "isbi2012", "data.mask.invert=true")
    assert np.array_equal(inverted.load(inverted.samples[0])[1], 1 - mask)


def test_cvc_clinicdb_release_layout(shared_data):
    ds, _ = dataset("cvc_clinicdb", shared_data / "cvc_clinicdb_sample" / "CVC-ClinicDB")
    assert [s.id for s in ds.samples] == ["1", "2", "3", "4", "5", "6", "200", "201", "202", "203", "204", "205"]
    assert {s.group for s in ds.samples} == {"seq01", "seq10"}
    image, mask = ds.load(ds.samples[0])
    assert image.shape == (288, 384, 3) and image.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1} and mask.any()  # intermediate values thresholded at 128


@pytest.mark.parametrize("frame,seq", [(1, "seq01"), (25, "seq01"), (26, "seq02"), (205, "seq10"),
                                       (206, "seq11"), (592, "seq29"), (612, "seq29")])
def test_cvc_sequence_table(frame, seq):
    assert sequence_of(str(frame)) == seq


def test_covid_ct_binary_and_multiclass(shared_data):
    ds, _ = dataset("covid_ct", shared_data / "covid19_ct_seg")
    subsets = [s.subset for s in ds.samples]
    assert subsets.count("train") == 50 and subsets.count("test") == 48
    image, mask = ds.load(ds.samples[0])
    assert image.shape[2] == 1 and image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 1}
    multi, _ = dataset("covid_ct_multiclass", shared_data / "covid19_ct_seg" / "Dataset")
    assert len(multi.samples) == 98
    values = set()
    for s in multi.samples[:10]:
        values |= set(np.unique(multi.load(s)[1]).tolist())
    assert values == {0, 1, 2}


def test_generic_folders_any_extension(shared_data, tmp_path):
    src = shared_data / "covid19_ct_seg/Dataset/TrainingSet/LungInfection-Train/Doctor-label"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("0", "1", "2"):
        (tmp_path / "images" / f"case{stem}.jpg").symlink_to(src / "Imgs" / f"{stem}.jpg")
        (tmp_path / "masks" / f"case{stem}.png").symlink_to(src / "GT" / f"{stem}.png")
    # macOS writes a ._NAME copy of each file's metadata on foreign drives: not an image, not a sample
    (tmp_path / "images" / "._case0.jpg").write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    ds, cfg = dataset("folders", tmp_path, "data.channels=1")
    assert [s.id for s in ds.samples] == ["case0", "case1", "case2"]
    report = check_dataset(ds, list(cfg.data.classes))
    assert report["samples"] == 3 and report["problems"] == [] and report["mask_values"] == [0, 255]
    assert sum(report["class_balance"].values()) == pytest.approx(1.0)


def test_synthetic_is_deterministic_and_honours_empty_fraction():
    cfg = medrun.compose("train", ["data=synthetic", "data.count=40", "data.empty_fraction=0.5"])
    a, b = build_dataset(cfg.data), build_dataset(cfg.data)
    img_a, mask_a = a.load(a.samples[3])
    img_b, mask_b = b.load(b.samples[3])
    assert np.array_equal(img_a, img_b) and np.array_equal(mask_a, mask_b)
    empty = sum(not a.load(s)[1].any() for s in a.samples)
    assert 10 <= empty <= 30
    cfg3 = OmegaConf.merge(cfg, {"data": {"classes": ["bg", "a", "b"], "channels": 3}})
    img, mask = build_dataset(cfg3.data).load(a.samples[0])
    assert img.shape[2] == 3 and mask.max() <= 2


def test_data_check_reads_real_cvc(shared_data):
    ds, cfg = dataset("cvc_clinicdb", shared_data / "cvc_clinicdb_sample" / "CVC-ClinicDB")
    report = check_dataset(ds, list(cfg.data.classes))
    assert report["samples"] == 12 and report["groups"] == 2 and report["channels"] == {3: 12}
    assert report["image_sizes_hxw"] == {"288x384": 12}
    assert report["mask_values"].endswith("distinct values from 0 to 255")  # intermediate values reported


def test_class_folders_read_nested_images_and_leave_hidden_and_system_folders_out(shared_data, tmp_path, caplog):
    src = shared_data / "isbi2012/membrane/train/image"
    for path in ("benign/0.png", "benign/patient7/1.png", "benign/patient8/1.png", "malignant/2.png",
                 ".ipynb_checkpoints/3.png", "__MACOSX/benign/._0.png", "benign/.hidden/4.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to(src / f"{path.split('/')[-1].lstrip('._')}")
    (tmp_path / "benign/notes.txt").write_text("not an image")
    with caplog.at_level("INFO", logger="medrun"):
        ds = build_dataset(medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}"]).data)
    assert ds.classes == ["benign", "malignant"]
    assert sorted(s.id for s in ds.samples) == ["benign_0", "benign_patient7_1", "benign_patient8_1", "malignant_2"]
    assert "1 file(s) that are not images left out, e.g. " + str(tmp_path / "benign/notes.txt") in caplog.text
    assert {s.group for s in ds.samples} == {None}
    grouped = build_dataset(medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}",
                                                     "data.group_by_subfolder=true"]).data)
    assert {s.id: s.group for s in grouped.samples} == {"benign_0": "benign_0", "benign_patient7_1": "patient7",
                                                        "benign_patient8_1": "patient8", "malignant_2": "malignant_2"}
    (tmp_path / "malignant/0.jpg").symlink_to(src / "0.png")
    (tmp_path / "malignant/0.png").symlink_to(src / "0.png")
    with pytest.raises(MedrunError, match=r"duplicate sample ids \['malignant_0'\] \(.*malignant/0.jpg and "
                                          r".*malignant/0.png\): file stems must be unique"):
        build_dataset(medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}"]).data)


def test_csv_labels_spaces_empty_cells_and_one_hot_values(shared_data, tmp_path):
    src = shared_data / "isbi2012/membrane/train/image"
    for k in range(4):
        (tmp_path / f"{k}.png").symlink_to(src / f"{k}.png")
    table = tmp_path / "labels.csv"

    def read(text, *overrides):
        table.write_text(text)
        return build_dataset(medrun.compose("train", ["data=csv", f"data.csv={table}", *overrides]).data)

    # "image, label" as spreadsheets export it: the same columns and classes as without the spaces
    ds = read("image, label\n0.png, a\n1.png, b \n2.png,a\n3.png, b\n")
    assert ds.classes == ["a", "b"] and [s.label for s in ds.samples] == [0, 1, 0, 1]
    with pytest.raises(MedrunError, match=r"labels.csv row 3 has no label in column 'label' \(data.label_column\)"):
        read("image,label\n0.png,a\n1.png,\n2.png,b\n")
    hot = read("image,x,y\n0.png,1.0,0\n1.png,,1\n2.png,1,1\n", "data.label_columns=[x,y]")
    assert [s.extra["targets"] for s in hot.samples] == [[1, 0], [0, 1], [1, 1]] and hot.multilabel
    with pytest.raises(MedrunError, match=r"labels.csv row 3: '-1' in column 'x' \(data.label_columns\); one-hot "
                                          r"columns hold 0 or 1"):
        read("image,x,y\n0.png,1,0\n1.png,-1,1\n", "data.label_columns=[x,y]")
    with pytest.raises(MedrunError, match=r"row 2: 'true' in column 'x'"):
        read("image,x,y\n0.png,true,0\n", "data.label_columns=[x,y]")


def test_folders_pair_masks_by_a_suffix_and_an_unpaired_mask_names_the_suffix_that_would_pair_it(shared_data,
                                                                                                  tmp_path):
    cvc = shared_data / "cvc_clinicdb_sample/CVC-ClinicDB"
    (tmp_path / "ISIC2018_Task1-2_Training_Input").mkdir()
    (tmp_path / "ISIC2018_Task1_Training_GroundTruth").mkdir()
    for k in (1, 2):
        (tmp_path / f"ISIC2018_Task1-2_Training_Input/ISIC_000000{k}.tif").symlink_to(cvc / f"Original/{k}.tif")
        (tmp_path / f"ISIC2018_Task1_Training_GroundTruth/ISIC_000000{k}_segmentation.tif").symlink_to(
            cvc / f"Ground Truth/{k}.tif")
    cfg = medrun.compose("train", ["experiment=sharp_unet_isic2018", f"data.root={tmp_path}"])
    ds = build_dataset(cfg.data)
    assert [s.id for s in ds.samples] == ["ISIC_0000001", "ISIC_0000002"]
    image, mask = ds.load(ds.samples[0])
    assert image.shape[:2] == mask.shape == (288, 384) and 0 < mask.mean() < 1
    cfg.data.mask_suffix = ""
    with collecting_problems() as problems:
        build_dataset(cfg.data)
    assert len(problems) == 4 and problems[2].endswith(
        "ISIC_0000001_segmentation.tif (no file with stem 'ISIC_0000001_segmentation' in "
        f"{tmp_path}/ISIC2018_Task1-2_Training_Input; data.mask_suffix=_segmentation would pair it with ISIC_0000001.tif)")
