"""Issue #10: a crafted run folder cannot run code, paths stay inside their folders, documented features work,
and the correctness fixes (absent classes, frame groups, contiguous ISBI folds, DICOM VOI, DDP ranks, sizes)."""
import csv
import json
import os
import pickle

import numpy as np
import pydicom
import pytest
import torch
from omegaconf import OmegaConf

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from medrun.evaluate import evaluate_run
from medrun.predict import predict_files
from tests.conftest import TINY

PWNED = None


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run[0]


@pytest.fixture
def crafted_run(finished_run, tmp_path):
    """A copy of a finished run whose config opts in to unsafe loading and whose checkpoint runs a command."""
    import shutil

    global PWNED
    PWNED = tmp_path / "pwned"
    run = tmp_path / "sent_to_you"
    shutil.copytree(finished_run, run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.allow_unsafe_checkpoints = True
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    for ckpt in (run / "fold_0" / "checkpoints").glob("*.ckpt"):
        with open(ckpt, "wb") as f:
            pickle.dump({"state_dict": {}, "x": Payload()}, f)
    return run


def test_a_run_folder_cannot_opt_in_to_unsafe_loading(crafted_run, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDRUN_ALLOW_UNSAFE_CHECKPOINTS", raising=False)
    with pytest.raises(MedrunError, match="refusing to load"):
        evaluate_run(crafted_run)
    with pytest.raises(MedrunError, match="refusing to load"):
        predict_files(crafted_run, crafted_run / "fold_0", tmp_path / "pred")
    (crafted_run / "cv_summary.json").unlink()
    (crafted_run / "fold_0" / "metrics.json").unlink()  # an interrupted run: resume reopens last.ckpt
    (crafted_run / "fold_0" / "trained.json").unlink()
    with pytest.raises(MedrunError, match="refusing to load"):
        medrun.api.resume(crafted_run)
    assert not PWNED.exists()
    # the opt-in of the current command is honoured (and the payload runs, as the user asked)
    with pytest.raises(Exception):
        medrun.api.resume(crafted_run, allow_unsafe_checkpoints=True)
    assert PWNED.exists()


def test_augment_targets_must_be_transforms(tiny, tmp_path):
    for target in ("os.system", "albumentations.core.serialization.os.system", "albumentations.core.serialization.load"):
        cfg = medrun.compose("train", [*tiny, f"data.augment=[{{_target_: {target}, _args_: [touch {tmp_path}/x]}}]"])
        with pytest.raises(MedrunError, match=r"data.augment\[0\] has _target_ .*only albumentations"):
            medrun.build_datamodule(cfg).train_dataloader()
    nested = "data.augment=[{_target_: albumentations.OneOf, transforms: [{_target_: os.system, _args_: [ls]}]}]"
    with pytest.raises(MedrunError, match=r"data.augment\[0\].transforms\[0\] has _target_ 'os.system'"):
        medrun.build_datamodule(medrun.compose("train", [*tiny, nested])).train_dataloader()
    assert not (tmp_path / "x").exists()
    ok = medrun.compose("train", [*tiny, "data.augment=[{_target_: albumentations.HorizontalFlip, p: 0.5}]"])
    assert len(medrun.build_datamodule(ok).train_dataloader().dataset.transform.transforms) == 3


def test_timm_weights_load_safely_and_strictly(tmp_path):
    import timm

    from medrun.models.classifiers import VGGGAP, timm_classifier

    global PWNED
    PWNED = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv1.weight": Payload()}, f)
    with pytest.raises(MedrunError, match="model.weights_path: refusing to load"):
        timm_classifier("resnet18", 3, 2, pretrained="imagenet", weights_path=str(evil))
    assert not PWNED.exists()
    source = timm.create_model("resnet18", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = timm_classifier("resnet18", 1, 2, pretrained="imagenet", weights_path=str(tmp_path / "r18.pth"))
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.conv1.weight.shape[1] == 1  # the stem was adapted to one channel, the head to two classes
    assert torch.allclose(model.conv1.weight[:, 0], source.conv1.weight.sum(1))
    # VGG: a file that fits nothing fails instead of loading nothing
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad_vgg.pth")
    with pytest.raises(MedrunError, match="is not a torchvision vgg16 state_dict"):
        VGGGAP(3, 2, pretrained="imagenet", weights_path=str(tmp_path / "bad_vgg.pth"))


def test_paths_cannot_escape_their_folders(tiny, finished_run, tmp_path, capsys):
    assert main(["train", *tiny, "name=../../escaped"]) == 2
    assert "name='../../escaped' must be a plain folder name" in capsys.readouterr().err
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "fold_0" / "metrics.json").read_text())
    record["checkpoint"] = "../../../elsewhere/best.ckpt"
    (run / "fold_0" / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(MedrunError, match="checkpoint '../../../elsewhere/best.ckpt' points outside"):
        evaluate_run(run)
    images = tmp_path / "csv"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    Image.new("RGB", (8, 8)).save(images / "inside.png")
    (images / "labels.csv").write_text("image,label\ninside.png,a\n../outside.png,b\n")
    cfg = medrun.compose("train", ["data=csv", f"data.csv={images}/labels.csv"])
    with pytest.raises(MedrunError, match=r"row 3 names '../outside.png', which lies outside the image folder"):
        medrun.api.build_store(cfg, preload=False)


def test_anonymized_ids_keep_file_names_out_of_the_run(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRUN_ID_KEY_FILE", str(tmp_path / "key"))
    overrides = ["experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct", "cv.folds=2",
                 "data.image_size=[32,32]", "trainer.max_epochs=1", "logger=none", "callbacks.progress=none",
                 "model=timm", "model.backbone=resnet18", "data.anonymize_ids=true", f"paths.output_dir={tmp_path}/o"]
    run_dir, _ = medrun.train(medrun.compose("train", overrides))
    stems = [p.stem for p in (shared_data / "dicom_ct" / "dicom_dir").glob("*.dcm")]
    assert len(stems) == 12 and (tmp_path / "key").is_file()
    for f in run_dir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".csv", ".md", ".yaml", ".txt"):
            text = f.read_text()
            assert not any(s in text for s in stems), f
    ids = sorted(i for fold in json.loads((run_dir / "splits.json").read_text())["folds"] for i in fold["test"])
    again = medrun.api.build_store(medrun.compose("train", overrides), preload=False)
    assert sorted(s.id for s in again.samples) == ids  # the same key gives the same ids
    # predict on the same files names its rows by those ids, never by the file names
    from medrun.predict import predict_files

    predict_files(run_dir, shared_data / "dicom_ct" / "dicom_dir", tmp_path / "pred")
    text = (tmp_path / "pred" / "predictions.csv").read_text() + (tmp_path / "pred" / "report.json").read_text()
    assert not any(s in text for s in stems)
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert sorted(r["id"] for r in rows) == sorted(s.id for s in again.samples)


def test_wandb_config_carries_no_absolute_paths():
    from medrun.training import without_paths

    config = {"data": {"root": "/home/alice/patients/site_b", "csv": "labels.csv", "batch_size": 8,
                       "augment": [{"p": 0.5}]}, "paths": {"output_dir": "/srv/runs"}, "note": "/abs/thing"}
    out = without_paths(config)
    assert "/home/alice" not in json.dumps(out) and "/srv" not in json.dumps(out) and "/abs" not in json.dumps(out)
    assert out["data"]["root"] == ".../site_b" and out["data"]["batch_size"] == 8
    # recorded overrides and the other path keys too: everything a logger receives
    more = without_paths({"overrides": ["data.root=/home/alice/site_b", "data.test_csv=/home/alice/t.csv", "seed=1"],
                          "data": {"test_image_dir": "/home/alice/test"}})
    assert "/home/alice" not in json.dumps(more) and more["overrides"][2] == "seed=1"
    assert more["overrides"][0] == "data.root=.../site_b"


def test_loggers_never_receive_the_raw_config_with_paths(tiny, tmp_path):
    import csv as csv_module

    run_dir, _ = medrun.train(medrun.compose("train", [*tiny, "logger=csv", f"data.root={tmp_path}"]))
    logs = run_dir / "fold_0" / "logs"
    assert (logs / "metrics.csv").is_file() and next(csv_module.reader(open(logs / "metrics.csv")))
    hparams = logs / "hparams.yaml"
    assert not hparams.exists() or str(tmp_path) not in hparams.read_text()
    task = medrun.build_model(medrun.compose("train", tiny))
    assert task._log_hyperparams is False  # Lightning's own hyperparameter logging is off


def test_eval_on_another_test_set_searches_on_the_run_own_data(tmp_path):
    cfg = medrun.compose("train", [*TINY, "cv=holdout", "data.count=16", f"paths.output_dir={tmp_path}"])
    run_dir, _ = medrun.train(cfg)
    splits = json.loads((run_dir / "splits.json").read_text())
    seen = []
    # another synthetic "site": other images, some with the same ids as the run's own samples
    _, result = evaluate_run(run_dir, threshold="search", data_overrides=["data.count=6", "data.generator_seed=7"],
                             search_hook=seen.extend)
    assert result["evaluated_on"] == "test" and result["n"] == 6
    assert sorted(seen) == sorted(splits["folds"][0]["val"])
    _, fixed = evaluate_run(run_dir, data_overrides=["data.count=6", "data.generator_seed=7"], search_hook=seen.append)
    assert fixed["search_set"] is None and list(fixed["rows"]) == ["argmax"] and len(seen) == len(splits["folds"][0]["val"])


def test_progress_none_shows_no_bar(tiny, tmp_path):
    from medrun.training import build_callbacks, build_trainer

    cfg = medrun.compose("train", tiny)
    assert build_trainer(cfg, tmp_path, build_callbacks(cfg, tmp_path, "1/1"), False).progress_bar_callback is None
    rich = medrun.compose("train", [*tiny, "callbacks.progress=rich"])
    assert build_trainer(rich, tmp_path, build_callbacks(rich, tmp_path, "1/1"), False).progress_bar_callback is not None


def test_predict_applies_min_area_scaled_to_the_input(tmp_path):
    from medrun.evaluation.decision import Decision
    from medrun.predict import _write_mask
    from medrun.tasks.segmentation import SegmentationTask

    probs = np.zeros((1, 10, 10), dtype=np.float32)
    probs[0, :2, :2] = 0.9  # 4 % of the image
    for name, area in (("small", 5), ("kept", 3)):  # min area 5 % / 3 % of the model's 10x10 input
        _write_mask(tmp_path, name, probs, (40, 40), SegmentationTask, Decision(0.5, area, (10, 10)), False)
    from PIL import Image

    assert np.array(Image.open(tmp_path / "small.png")).max() == 0
    kept = np.array(Image.open(tmp_path / "kept.png"))
    assert kept.shape == (40, 40) and 0.03 < (kept > 0).mean() < 0.06


def test_absent_classes_do_not_inflate_multiclass_scores():
    from medrun.evaluation.metrics import confusion, scores

    # one image with class 1 half right; class 2 absent from truth and prediction
    target = torch.zeros(1, 2, 4, dtype=torch.long)
    target[0, 0, :2] = 1
    probs = torch.zeros(1, 3, 2, 4)
    probs[0, 0] = 1
    probs[0, 1, 0, :1] = 2  # predicts 1 of the 2 class-1 pixels
    counts = confusion(torch.softmax(probs * 10, 1), target, binary=False)
    ignored = scores(*counts, ["bg", "a", "b"])
    kept = scores(*counts, ["bg", "a", "b"], absent="empty_score")
    assert ignored["dice"] == pytest.approx(2 / 3)  # class 1 only
    assert kept["dice"] == pytest.approx((2 / 3 + 1) / 2)  # the absent class inflated it
    assert ignored["dice_b"] == 1.0  # absent from every image: empty_score, never NaN
    with pytest.raises(MedrunError, match="task.absent_classes='drop'; valid: ignore, empty_score"):
        scores(*counts, ["bg", "a", "b"], absent="drop")


def test_split_frames_stay_on_one_side_and_isbi_folds_are_contiguous(shared_data, tmp_path):
    from medrun.data import build_dataset
    from medrun.data.splits import make_splits

    files = pydicom.__file__.rsplit("/", 1)[0] + "/data/test_files/rtdose.dcm"
    for cls in ("a", "b"):
        for n in range(3):
            (tmp_path / cls).mkdir(exist_ok=True)
            (tmp_path / cls / f"dose_{n}.dcm").write_bytes(open(files, "rb").read())
    cfg = medrun.compose("train", ["data=class_folders", f"data.root={tmp_path}", "data.dicom.frames=split",
                                   "cv.folds=3"])
    ds = build_dataset(cfg.data)
    splits = make_splits(ds.samples, cfg.cv, 0)
    for fold in splits["folds"]:
        files_of = lambda part: {i.rsplit("_frame", 1)[0] for i in fold[part]}  # noqa: E731
        assert not files_of("test") & (files_of("train") | files_of("val"))
    isbi = medrun.compose("train", ["experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012"])
    store = medrun.api.build_store(isbi, preload=False)
    splits = medrun.api.build_splits(isbi, store)
    for fold in splits["folds"]:
        idx = sorted(int(i) for i in fold["test"])
        assert idx == list(range(idx[0], idx[0] + 6))  # 30 slices, 5 folds: blocks of 6 consecutive sections
    shuffled = medrun.api.build_splits(medrun.compose("train", ["experiment=sharp_unet_isbi",
                                                                f"data.root={shared_data}/isbi2012",
                                                                "+cv.contiguous=false"]), store)
    assert any(sorted(int(i) for i in f["test"]) != list(range(min(map(int, f["test"])), min(map(int, f["test"])) + 6))
               for f in shuffled["folds"])


def test_dicom_window_keeps_its_fixed_scale_and_inverse_presentation(tmp_path):
    from medrun.data.dicom import read_dicom

    src = pydicom.__file__.rsplit("/", 1)[0] + "/data/test_files/CT_small.dcm"
    ds = pydicom.dcmread(src)
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(tmp_path / "w.dcm")
    img = read_dicom(tmp_path / "w.dcm")[..., 0].astype(int)
    # DICOM's LINEAR window (PS3.3 C.11.2.1.2) onto the stored range, then that range onto 0..255
    bits = int(ds.BitsStored)
    lo = -(2 ** (bits - 1)) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hi = (2 ** (bits - 1) - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    y = ((hu - (40 - 0.5)) / (400 - 1) + 0.5).clip(0, 1) * (hi - lo) + lo
    expected = np.round((y - lo) / (hi - lo) * 255)
    assert np.abs(img - expected).max() <= 1
    assert img.min() == 0 and img.max() == 255 and (img[hu < -160] == 0).all()  # the window, not min-max
    ds.PresentationLUTShape = "INVERSE"
    ds.save_as(tmp_path / "inv.dcm")
    assert np.array_equal(read_dicom(tmp_path / "inv.dcm")[..., 0].astype(int), 255 - img)


def test_voi_lut_sequence_is_indexed_by_integer_values(tmp_path):
    from pydicom.dataset import Dataset

    from medrun.data.dicom import read_dicom

    src = pydicom.__file__.rsplit("/", 1)[0] + "/data/test_files/MR_small.dcm"  # unsigned 16-bit, no rescale
    ds = pydicom.dcmread(src)
    for tag in ("WindowCenter", "WindowWidth"):
        if tag in ds:
            del ds[tag]
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: 4096 entries from value 0, 16-bit output
    lut.add_new(0x00283006, "US", [v * 16 for v in range(4096)])  # LUT Data: a ramp
    ds.VOILUTSequence = [lut]
    ds.save_as(tmp_path / "lut.dcm")
    img = read_dicom(tmp_path / "lut.dcm")[..., 0].astype(int)
    expected = np.clip(ds.pixel_array.astype(int), 0, 4095) * 16 / 65535  # the LUT's fixed output range
    assert np.abs(img - np.round(expected * 255)).max() <= 1 and img.max() < 255  # not stretched to min-max


def test_ranks_other_than_zero_are_ddp_children(monkeypatch):
    from medrun.runs import is_ddp_child

    for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not is_ddp_child()
    monkeypatch.setenv("NODE_RANK", "1")  # the first process of a second node
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_ddp_child()


def test_melanet_classifier_config_matches_the_paper(capsys):
    cfg = medrun.compose("train", ["experiment=vgg_gap_focal_isic2016", "data.root=x", "data.csv=y"])
    assert list(cfg.data.image_size) == [256, 256] and cfg.callbacks.early_stopping.patience == 8
    assert cfg.model.pretrained == "imagenet" and cfg.data.batch_size == 16
    assert cfg.task.optimizer.name == "adadelta" and cfg.task.scheduler.plateau.factor == 0.1
    assert cfg.cv.name == "holdout" and cfg.data.pad_to_square and cfg.data.normalize.normalization == "min_max"
    assert (cfg.task.loss.weighting, cfg.task.loss.positive) == ("alpha_t", "malignant")
    melanet = medrun.compose("train", ["experiment=melanet_isic2016", "data.root=x", "data.csv=y"])
    assert (melanet.oversample.adversarial_loss, melanet.oversample.lambda_identity) == ("bce", 0.0)
    with pytest.raises(MedrunError, match="the torchvision weights vgg16 are not in"):
        medrun.build_model(OmegaConf.merge(cfg, {"data": {"classes": ["benign", "malignant"], "mode": "multiclass"}}))
    scratch = medrun.compose("train", ["experiment=vgg_gap_focal_isic2016_scratch", "data.root=x", "data.csv=y"])
    assert scratch.model.pretrained is None and list(scratch.data.image_size) == [256, 256]


def test_too_small_input_fails_in_one_line_naming_the_key(shared_data, tmp_path, capsys):
    code = main(["train", "experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist",
                 "data.image_size=[28,28]", f"paths.output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "data.image_size=[28, 28] does not fit model timm densenet121" in err and "[32, 32] works" in err
    assert not any(tmp_path.rglob("config.yaml"))  # nothing was written
