"""Every bad input ends as exit code 2 and one `medrun: error:` line naming the file or key, no traceback."""
import numpy as np
import pydicom
import pytest
from PIL import Image

from medrun.cli import main
from tests.conftest import TINY_MODEL


def seg_folder(root, n=4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((32, 32)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    return root


def breaks(kind, root):
    """Damage a fresh folder dataset in one way; returns the overrides and the expected message part."""
    base = [*TINY_MODEL, "data=folders", f"data.root={root}", "data.channels=1", f"paths.output_dir={root.parent / 'out'}"]
    if kind == "missing_root":
        return [*base, f"data.root={root}/nope"], "does not exist"
    seg_folder(root)
    if kind == "empty":
        for p in (root / "images").iterdir():
            p.unlink()
        return base, "no image files"
    if kind == "image_without_mask":
        (root / "masks" / "1.png").unlink()
        return base, "image without mask"
    if kind == "mask_without_image":
        (root / "images" / "1.png").unlink()
        return base, "mask without image"
    if kind == "size_mismatch":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "2.png")
        return base, "masks/2.png: mask size 16x16 differs"
    if kind == "truncated":
        data = (root / "images" / "0.png").read_bytes()
        (root / "images" / "0.png").write_bytes(data[:200])
        return base, "cannot read"
    if kind == "text_as_png":
        (root / "images" / "3.png").write_text("hello")
        return base, "images/3.png"
    if kind == "values":
        Image.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "masks" / "0.png")
        return [*base, "data.mask.threshold=null", "data.mask.values=[0,255]"], "mask values [9]"
    if kind == "rgb_mask":
        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[..., 1] = 255
        Image.fromarray(rgb).save(root / "masks" / "0.png")
        return base, "colour (RGB)"
    if kind == "too_many_folds":
        return [*base, "cv.folds=9"], "cv.folds=9 is more than the 4 samples"
    if kind == "folds_not_int":
        return [*base, "cv.folds=abc"], "cv.folds='abc' is not an integer"
    raise ValueError(kind)


CASES = ["missing_root", "empty", "image_without_mask", "mask_without_image", "size_mismatch", "truncated",
         "text_as_png", "values", "rgb_mask", "too_many_folds", "folds_not_int"]


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("medrun: error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", CASES)
def test_bad_segmentation_data(kind, tmp_path, capsys):
    overrides, expected = breaks(kind, tmp_path / "data")
    assert expected in one_line_error(capsys, ["train", *overrides])
    assert not (tmp_path / "out").exists()  # nothing presented as a run


def dicom_table(tmp_path, shared_data, damage):
    src = sorted((shared_data / "dicom_ct/dicom_dir").glob("*.dcm"))[:4]
    (tmp_path / "dicom").mkdir()
    rows = ["file,label"]
    for i, p in enumerate(src):
        ds = pydicom.dcmread(p)
        if i == 0 and damage == "no_pixels":
            del ds.PixelData
        if i == 0 and damage == "no_rows":
            del ds.Rows
        ds.save_as(tmp_path / "dicom" / p.name)
        rows.append(f"{p.name},{i % 2}")
    if damage == "compressed":
        jpeg_ls = pydicom.__file__.replace("__init__.py", "data/test_files/MR_small_jpeg_ls_lossless.dcm")
        (tmp_path / "dicom" / "mr.dcm").write_bytes(open(jpeg_ls, "rb").read())
        rows.append("mr.dcm,1")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return ["data=csv", f"data.csv={tmp_path}/labels.csv", "data.image_dir=dicom", "data.image_column=file",
            "task=classification", "model=timm", "model.backbone=resnet18", "data.channels=1", "cv.folds=2",
            "trainer.max_epochs=1", "logger=none", "callbacks.progress=none", "data.image_size=[32,32]",
            f"paths.output_dir={tmp_path}/out"]


@pytest.mark.parametrize("damage,expected", [("no_pixels", "DICOM has no pixel data"),
                                             ("no_rows", "DICOM has no Rows / Columns"),
                                             ("compressed", "no decoder installed")])
def test_bad_dicom(damage, expected, shared_data, tmp_path, capsys, monkeypatch):
    if damage == "compressed":  # the decoders are installed with medrun[dev]: take them away for this case
        decode = pydicom.Dataset.pixel_array.fget

        def without_decoders(ds):
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                raise RuntimeError("Unable to decode the pixel data: no plugin available")
            return decode(ds)

        monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(without_decoders))
    assert expected in one_line_error(capsys, ["train", *dicom_table(tmp_path, shared_data, damage)])


@pytest.mark.parametrize("edit,expected", [
    (lambda a: [x.replace("data.image_column=file", "data.image_column=path") for x in a], "no column 'path'"),
    (lambda a: a, "names"),
])
def test_bad_csv(edit, expected, shared_data, tmp_path, capsys):
    argv = dicom_table(tmp_path, shared_data, None)
    if expected == "names":
        with open(tmp_path / "labels.csv", "a") as f:
            f.write("missing.dcm,1\n")
        expected = "missing.dcm, which does not exist"
    assert expected in one_line_error(capsys, ["train", *edit(argv)])


@pytest.mark.parametrize("argv,expected", [
    (["train", "experiment=nope"], "unknown experiment 'nope'; valid:"),
    (["train", "model=nope"], "unknown model 'nope'; valid:"),
    (["train", "data=nope"], "unknown data 'nope'; valid:"),
    (["train", "trainer.max_epochs"], "bad override"),
    (["frobnicate"], "unknown command 'frobnicate'"),
])
def test_bad_command_lines(argv, expected, capsys):
    assert expected in one_line_error(capsys, argv)


@pytest.mark.parametrize("override,expected", [
    ("data.image_size=abc", "data.image_size='abc': give [height, width] in pixels"),
    ("data.image_size=[32]", "data.image_size=[32]: give [height, width]"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not an integer"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
    ("seed=abc", "seed='abc' is not an integer"),
    ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
    ("data.num_workers=-1", "data.num_workers=-1 must be at least 0"),
    ("task.optimizer.lr=-1", "task.optimizer.lr=-1.0 must be a positive number"),
    ("task.optimizer.lr=nan", "task.optimizer.lr=nan must be a positive number"),
    ("task.optimizer.lr=inf", "task.optimizer.lr=inf must be a positive number"),
    ("seed=-1", "seed=-1 must be at least 0"),
    ("seed=4294967296", "seed=4294967296 must be at most 4294967295"),
    ("data.channels=0", "data.channels=0; valid: 1 (grey), 3 (RGB)"),
    ("data.count=0", "data.count=0 must be at least 1"),
    ("data.count=-3", "data.count=-3 must be at least 1"),
    ("data.mask.threshold=0", "data.mask.threshold=0 must be at least 1"),
    ("data.mask.threshold=70000", "data.mask.threshold=70000: no mask pixel can reach it"),
    ("task.threshold=2", "task.threshold=2.0 must lie strictly between 0 and 1"),
    ("task.threshold=0", "task.threshold=0.0 must lie strictly between 0 and 1"),
    ("name=" + "a" * 300, "name=" + "a" * 300 + " is 300 characters long"),
    ("paths.output_dir=/proc/medrun", "paths.output_dir=/proc/medrun is not writable"),
    # a library's keyword arguments, checked before the run folder instead of failing inside the first fold
    ("+trainer.max_epoch=1", "trainer.max_epoch: Trainer takes no argument 'max_epoch'; did you mean "
                             "trainer.max_epochs?"),
    ("+task.optimizer.momentun=0.9", "task.optimizer.momentun: Adam takes no argument 'momentun'; it takes lr, betas"),
    ("callbacks.progress=fancy", "callbacks.progress='fancy'; valid: rich, tqdm, none"),
    ("callbacks.checkpoint.test=first", "callbacks.checkpoint.test='first'; valid: best, last"),
    ("++data.normalize.normalization=image", "data.normalize has normalization=image and mean / std, which that mode "
                                            "ignores; add normalization: standard"),
    ("callbacks.backbone_finetuning.enabled=true", "callbacks.backbone_finetuning needs a model with an encoder; "
                                                   "model.name=sharp_unet has none (use model=smp_unet)"),
    # what the task's constructor checks: the task is built once on the meta device before the run folder
    ("task.loss=[{name: dice, smoth: 1}]", "task.loss[0] (name=dice): DiceLoss.__init__() got an unexpected "
                                          "keyword argument 'smoth'"),
    ("task.loss=[{name: dicey}]", "unknown segmentation loss 'dicey' (task.loss[].name); valid: cross_entropy, dice"),
])
def test_bad_run_values_end_in_one_line_naming_the_key(override, expected, tmp_path, capsys):
    from tests.conftest import TINY

    assert expected in one_line_error(capsys, ["train", *TINY, f"paths.output_dir={tmp_path}", override])
    assert not (tmp_path / "quickstart").exists() and not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("argv,expected", [
    (["eval", "run=nowhere", "min_areas=abc"], "min_areas='abc' is not an integer"),
    (["eval", "run=nowhere", "target_sensitivity=abc"], "target_sensitivity='abc' is not a number"),
    (["eval", "run=nowhere", "ci_resamples=abc"], "ci_resamples='abc'; give a whole number of bootstrap resamples"),
    (["eval", "run=nowhere", "ci_level=95"], "ci_level=95; give a confidence level between 0 and 1"),
    (["explain", "run=nowhere", "n=0"], "n=0 must be at least 1"),
    (["explain", "run=nowhere", "n=-3"], "n=-3 must be at least 1"),
    (["explain", "run=nowhere", "n=abc"], "n='abc' is not an integer"),
    (["explain", "run=nowhere", "k=0"], "k=0 must be at least 2"),
])
def test_bad_eval_and_explain_options(argv, expected, capsys):
    assert expected in one_line_error(capsys, argv)


def test_a_gpu_device_without_a_gpu_is_one_line():
    import torch

    from medrun.errors import MedrunError
    from medrun.inference import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(MedrunError, match="device=cuda: no CUDA GPU is visible"):
            resolve_device("cuda")


def test_a_csv_that_is_not_utf8_is_one_line(shared_data, tmp_path, capsys):
    argv = dicom_table(tmp_path, shared_data, None)
    table = tmp_path / "labels.csv"
    table.write_bytes(table.read_bytes() + "caf\u00e9.dcm,1\n".encode("latin-1"))
    assert "is not UTF-8 text" in one_line_error(capsys, ["train", *argv])


def test_a_dcm_that_is_not_dicom_is_listed_by_data_check_and_one_line_in_train(shared_data, tmp_path, capsys):
    argv = dicom_table(tmp_path, shared_data, None)
    (tmp_path / "dicom" / "fake.dcm").write_text("not a DICOM file")
    with open(tmp_path / "labels.csv", "a") as f:
        f.write("fake.dcm,1\n")
    assert "fake.dcm is not a readable DICOM file" in one_line_error(capsys, ["train", *argv])
    code = main(["data", "check", *[a for a in argv if a.startswith(("data", "task"))]])
    out = capsys.readouterr()
    assert code != 0 and "fake.dcm is not a readable DICOM file" in out.out + out.err
    assert "Traceback" not in out.err


def test_a_gan_size_too_small_for_the_generator_names_sizes_that_work(shared_data, tmp_path, capsys):
    argv = ["train", "experiment=melanet_breastmnist", f"data.root={shared_data}/medmnist", "oversample.size=[32,32]",
            f"paths.output_dir={tmp_path}"]
    message = one_line_error(capsys, argv)
    assert "oversample.size=[32, 32] does not fit the generator's 8 levels" in message
    assert "multiples of 128 from 256" in message


def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys):
    from tests.conftest import TINY

    (tmp_path / "a_file").write_text("x")
    message = one_line_error(capsys, ["train", *TINY, f"paths.output_dir={tmp_path / 'a_file' / 'runs'}"])
    assert "paths.output_dir=" in message and "cannot be created" in message


def test_a_positive_class_that_is_no_class_is_one_line_before_any_work(tmp_path, capsys):
    err = one_line_error(capsys, ["train", "experiment=quickstart_cls", "data.positive=tumour",
                                  f"paths.output_dir={tmp_path}"])
    assert "data.positive='tumour' is not a class; valid: normal, lesion" in err and not any(tmp_path.iterdir())


def test_missing_weights_are_named_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    import medrun.data.build

    listed = []
    monkeypatch.setattr(medrun.data.build, "build_dataset", lambda *a, **k: listed.append(a) or 1 / 0)
    for override, expected in (("model.segmenter.encoder_weights_path=/nowhere/resnet34.pth",
                                "model.segmenter.encoder_weights_path=/nowhere/resnet34.pth does not exist"),
                               ("model.classifier.pretrained=imagenet",
                                "model.classifier.pretrained: the timm weights resnext50_32x4d.a1h_in1k are not in")):
        err = one_line_error(capsys, ["train", "experiment=cascade_busi", "data.root=/nowhere/busi", override,
                                      f"paths.output_dir={tmp_path}"])
        assert expected in err
    assert listed == [] and not any(tmp_path.iterdir())
