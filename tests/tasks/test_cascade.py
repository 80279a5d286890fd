"""The "One Case" cascade task: positive-only segmenter training, stages and schedules, thresholds never chosen
on a test part, and the cascade end to end on the real BUSI images in the SIIM layout."""
import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
import torch

import medrun
import medrun.tasks.cascade as cascade
from medrun.cli import main
from medrun.config import to_plain
from medrun.data.build import build_store
from medrun.data.rle import decode
from medrun.errors import MedrunError
from medrun.evaluate import evaluate_run
from medrun.inference import saved_config
from medrun.tasks.cascade import CascadeTask

TINY_CASCADE = ["data.image_size=[32,32]", "model.classifier_size=[32,32]", "model.classifier.backbone=resnet18",
                "model.segmenter.encoder=resnet18", "trainer.max_epochs=1", "logger=none", "callbacks.progress=none",
                "+trainer.limit_train_batches=2", "data.batch_size=8", "task.tta=none",
                "task.triplet.tops=[0.5,0.7]", "task.triplet.areas=[0,500]", "task.triplet.bottoms=[0.3]",
                "task.triplet.min_components=[0,100]"]


@pytest.fixture(scope="module")
def busi_run(shared_data, module_tmp):
    out = module_tmp
    cfg = medrun.compose("train", ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "cv.folds=2",
                                   *TINY_CASCADE, f"paths.output_dir={out}"])
    return medrun.train(cfg)


def test_cascade_end_to_end_on_real_busi_images(busi_run, shared_data, monkeypatch):
    run_dir, summary = busi_run
    splits = json.loads((run_dir / "splits.json").read_text())
    pairs = list(csv.DictReader(open(shared_data / "busi_siim" / "near_duplicate_pairs.csv")))
    for fold in splits["folds"]:
        test = set(fold["test"])
        assert len(test) + len(fold["train"]) + len(fold["val"]) == 267
        assert all((p["ImageId_a"] in test) == (p["ImageId_b"] in test) for p in pairs)  # duplicates together
    rows = summary["table_5_1"]
    assert {"segmenter, ArgMax", "triplet (searched)", "cascade, ArgMax", "cascade, searched threshold"} <= set(rows)
    for row in rows.values():
        assert all(0 <= v["mean"] <= 1 for v in row.values())
    assert "## Table 5.1" in (run_dir / "summary.md").read_text()
    page = (run_dir / "report.html").read_text()  # the run's page: Table 5.1 and the classifier's ROC
    assert "<h2>Table 5.1 (mean ± std over folds)</h2>" in page and 'alt="classifier ROC"' in page
    per_image = list(csv.DictReader(open(run_dir / "fold_0" / "predictions" / "per_image.csv")))
    assert {r["id"] for r in per_image} == set(splits["folds"][0]["test"])
    assert all(r["mask_present"] in ("1.000000", "0.000000") and 0 <= float(r["classifier_probability"]) <= 1
               for r in per_image)
    record = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
    assert set(record["postprocessing"]) == {"segmenter", "cascade", "triplet", "raw"}
    # the thesis' Raw row: the pixel threshold alone searched, the classifier at its default decision
    assert record["postprocessing"]["raw"]["decision_threshold"] == 0.5
    assert "cascade, Raw" in record["table"]
    # the all-empty reference row: on BUSI about half the test images are empty, and Dice per image counts them as 1
    has_mask = {r["ImageId"]: r["has_mask"] == "1" for r in csv.DictReader(open(shared_data / "busi_siim" / "labels.csv"))}
    test = splits["folds"][0]["test"]
    empty = record["table"]["all-empty (reference, not a method)"]
    assert empty["dice"] == pytest.approx(sum(not has_mask[i] for i in test) / len(test)) and empty["dice_micro"] == 0
    assert record["trivial"]["all-empty"]["dice"] == pytest.approx(empty["dice"]) and "all-empty" in summary["trivial"]  # (task.tta=none here; the TTA rows are tested on the baseline)
    for row in record["table"].values():  # the thesis' pooled IoU is D / (2 - D) of its pooled Dice
        assert row["jaccard_micro"] == pytest.approx(row["dice_micro"] / (2 - row["dice_micro"]))
        assert 0 <= row["intersection_ratio_positive"] <= 1
    masks = list((run_dir / "fold_0" / "predictions").glob("*.png"))
    assert {m.stem for m in masks} == set(splits["folds"][0]["test"])
    tags = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID)
            for p in list((shared_data / "busi_siim" / "dicom-images-train").rglob("*.dcm"))[:20]}
    for f in run_dir.rglob("*"):
        if f.suffix in (".json", ".md", ".yaml", ".csv"):
            assert not any(t in f.read_text() for t in tags)


def test_cascade_thresholds_are_searched_on_the_validation_part_only(busi_run, monkeypatch):
    run_dir, _ = busi_run
    splits = json.loads((run_dir / "splits.json").read_text())
    fold = splits["folds"][0]
    seen = []
    real = cascade.search_cascade

    def spy(seg, cls, target, **kw):
        seen.append(len(seg))
        return real(seg, cls, target, **kw)

    monkeypatch.setattr(cascade, "search_cascade", spy)
    store_cfg = saved_config(run_dir)
    store = medrun.api.build_store(store_cfg, preload=False)
    from medrun.data.datamodule import FoldDataModule

    task = CascadeTask(to_plain(store_cfg))
    dm = FoldDataModule(store, fold, store_cfg.data, 0)
    collected = []
    collect = task._collect

    def recording(loader, device, tta="none"):
        collected.append(sorted(store.samples[i].id for i in loader.dataset.indices))
        return collect(loader, device, tta)

    task._collect = recording
    task.evaluate_heldout(dm, [s.id for s in store.samples], run_dir / "probe", "cpu")
    assert collected[0] == sorted(fold["val"]) and seen == [len(fold["val"])] * 2  # medrun's search and Raw
    assert not set(collected[0]) & set(fold["test"]) and collected[1] == sorted(fold["test"])


def test_eval_and_predict_work_on_a_cascade_run(busi_run, shared_data, tmp_path):
    run_dir, _ = busi_run
    out_dir, result = evaluate_run(run_dir, threshold="search", min_areas=(0, 50))
    assert result["evaluated_on"] == "out_of_fold" and result["n"] == 267
    post = result["postprocessing"]
    assert {"decision_threshold", "threshold", "min_area"} <= set(post)
    assert f"masks emptied where the classifier's probability < {post['decision_threshold']:.4g}" in \
        (out_dir / "summary.md").read_text()  # the searched triplet in words
    assert "classifier_auc" in result["rows"]["threshold"]
    # the last row's bootstrap interval over the 267 images, around its per-image Dice
    low, high = result["interval"]["bounds"]["dice"]
    assert result["interval"]["row"] == "threshold" and low < result["rows"]["threshold"]["dice"] < high
    inputs = tmp_path / "nested"  # 24 of the real DICOMs in their <study>/<series>/ folders, as the SIIM test set
    for p in sorted((shared_data / "busi_siim" / "dicom-images-train").rglob("*.dcm"))[:24]:
        link = inputs / p.relative_to(shared_data / "busi_siim" / "dicom-images-train")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(p)
    code = main(["predict", f"run={run_dir}", f"input={inputs}", f"output={tmp_path / 'pred'}", "format=siim_rle"])
    assert code == 0
    rows = list(csv.reader(open(tmp_path / "pred" / "submission.csv")))
    assert rows[0] == ["ImageId", "EncodedPixels"] and len(rows) == 25
    first = next(inputs.rglob(f"{rows[1][0]}.dcm"))
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    from PIL import Image

    png = np.array(Image.open(tmp_path / "pred" / f"{rows[1][0]}.png")) > 0
    assert np.array_equal(decode(rows[1][1], int(ds.Rows), int(ds.Columns)), png.astype(np.uint8))
    # an unreadable input still gets its row (empty), and the command says so with exit code 1
    some = tmp_path / "some"
    some.mkdir()
    for p in sorted(inputs.rglob("*.dcm"))[:2]:
        (some / p.name).write_bytes(p.read_bytes())
    (some / "broken.dcm").write_text("not DICOM")
    assert main(["predict", f"run={run_dir}", f"input={some}", f"output={tmp_path / 'pred2'}", "format=siim_rle"]) == 1
    rows = list(csv.reader(open(tmp_path / "pred2" / "submission.csv")))
    assert len(rows) == 4 and ["broken", "-1"] in rows
    report = json.loads((tmp_path / "pred2" / "report.json").read_text())
    assert report["failed"][0]["submission"].startswith("-1 (unreadable")


def test_baseline_freezes_the_loaded_pretrained_encoder_with_backbone_finetuning(shared_data, tmp_path):
    import segmentation_models_pytorch as smp

    from medrun.runs import load_checkpoint

    base = ["experiment=unet_resnet34_siim", f"data.root={shared_data}/busi_siim", "model.encoder=resnet18",
            "data.image_size=[32,32]", "cv=holdout", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
            "logger=none", "callbacks.progress=none", f"paths.output_dir={tmp_path}"]
    # the paper config asks for ImageNet weights: offline without a cached copy it fails at once, naming the key
    with pytest.raises(MedrunError, match="model.encoder_weights: the smp weights resnet18.imagenet are not in"):
        medrun.train(medrun.compose("train", base))
    torch.manual_seed(123)  # a stand-in for the ImageNet file: any resnet18 encoder state_dict
    weights = smp.Unet(encoder_name="resnet18", encoder_weights=None).encoder.state_dict()
    torch.save(weights, tmp_path / "resnet18_encoder.pth")
    cfg = medrun.compose("train", [*base, f"model.encoder_weights_path={tmp_path / 'resnet18_encoder.pth'}"])
    assert cfg.callbacks.backbone_finetuning.enabled and cfg.callbacks.backbone_finetuning.unfreeze_at_epoch == 6
    assert cfg.task.scheduler.name == "onecycle"
    run_dir, summary = medrun.train(cfg)
    # the baseline's Table 5.1 rows, searched on the validation part like the cascade's
    assert list(summary["postprocessing_table"]) == ["ArgMax", "Raw", "searched threshold", "TTA (flips)",
                                                     "TTA (flips), Raw threshold", "all-empty (reference, not a method)"]
    assert "## Post-processing on the test parts" in (run_dir / "summary.md").read_text()
    trained = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")["state_dict"]
    prefix = "net.net.encoder."
    encoder = {k[len(prefix):]: v for k, v in trained.items() if k.startswith(prefix)}
    assert encoder.keys() == weights.keys()
    norm = [k for k in weights if "bn" in k or "downsample.1" in k]
    # the loaded weights, frozen before epoch 6; batch norm learns meanwhile (fastai's freeze, train_bn: true)
    assert all(torch.equal(encoder[k], weights[k]) for k in weights if k not in norm)
    assert not all(torch.equal(encoder[k], weights[k]) for k in norm)
    decoder = [k for k in trained if ".decoder." in k and k.endswith("weight")]
    torch.manual_seed(0)
    assert decoder and any(trained[k].abs().sum() > 0 for k in decoder)


def test_cascade_stages_train_for_their_own_epochs_with_one_cycle_schedules(shared_data, tmp_path):
    from medrun.runs import load_checkpoint

    cfg = medrun.compose("train", ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "cv=holdout",
                                   *TINY_CASCADE, "trainer.max_epochs=3", "task.classifier.epochs=3",
                                   "task.segmenter.epochs=2", "task.segmenter.freeze_encoder_epochs=1",
                                   "task.segmenter.scheduler.onecycle.phases=[1,1]", "data.batch_size=32",
                                   "++trainer.limit_train_batches=1.0", "+trainer.limit_val_batches=1",
                                   f"paths.output_dir={tmp_path}"])
    paper = medrun.compose("train", ["experiment=cascade_siim"])
    assert (paper.task.classifier.epochs, paper.task.segmenter.epochs, paper.task.segmenter.freeze_encoder_epochs,
            paper.trainer.max_epochs) == (127, 18, 6, 127)
    assert paper.task.classifier.scheduler.name == paper.task.segmenter.scheduler.name == "onecycle"
    assert list(paper.task.segmenter.scheduler.onecycle.phases) == [6, 12]  # fit_one_cycle frozen, then unfrozen
    seen = []
    from medrun.tasks.cascade import CascadeTask as Task

    step = Task.training_step

    def recording(self, batch, batch_idx):
        encoder = self.net.segmenter.backbone
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        lr = self.optimizers()[1].param_groups[0]["lr"]  # the segmenter's, used by this step
        out = step(self, batch, batch_idx)
        after = encoder.state_dict()
        norm = {f"{name}.{key}" for name, m in encoder.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
                for key in m.state_dict()}
        convs = all(torch.equal(before[k], after[k]) for k in after if k not in norm)
        norms = all(torch.equal(before[k], after[k]) for k in norm)
        positives = batch[cascade.SEGMENTER_PART]
        seen.append((self.current_epoch, self.stages(), convs, norms, lr,
                     None if positives is None else positives["target"].flatten(1).any(1).all().item()))
        return out

    Task.training_step = recording
    try:
        run_dir, _ = medrun.train(cfg)
    finally:
        Task.training_step = step
    # epoch 0: both stages, the encoder's weights frozen while its batch norm learns (fastai's freeze); epoch 1:
    # the encoder trains; epoch 2: the classifier alone
    firsts = [next(s for s in seen if s[0] == e) for e in range(3)]
    assert [s[1] for s in firsts] == [(True, True, True), (True, True, False), (True, False, False)]
    assert all(s[2] for s in seen if s[0] == 0) and not all(s[3] for s in seen if s[0] == 0)
    assert not all(s[2] for s in seen if s[0] == 1)
    # the segmenter's batches hold positive images only, and fewer of them than the classifier's (about half of
    # BUSI is negative): its stream ends first each epoch
    per_epoch = [[s[5] for s in seen if s[0] == e] for e in range(2)]
    assert all(set(p) == {True, None} and p.index(None) == p.count(True) for p in per_epoch)
    assert per_epoch[0].count(True) < len(per_epoch[0]) / 1.5
    # one full cycle per phase of the segmenter, sized on its own batches: each phase's last step runs at the
    # cycle's final (lowest) rate, and the second phase starts over
    final = 1e-4 / 25 / 1e4  # OneCycleLR's end: max_lr / div_factor / final_div_factor
    lrs = [[s[4] for s in seen if s[0] == e and s[5]] for e in range(2)]
    assert lrs[0][-1] == pytest.approx(final) and lrs[1][-1] == pytest.approx(final)
    assert lrs[0][0] > 100 * final and lrs[1][0] == pytest.approx(lrs[0][0])
    state = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 2  # last.ckpt is the last epoch's, improved or not (what resume continues from)
    classifier, segmenter = state["lr_schedulers"]
    positives = per_epoch[0].count(True)
    assert classifier["total_steps"] == 3 * len(per_epoch[0])  # the classifier's cycle spans its 3 epochs
    assert [c["total_steps"] for c in segmenter["_schedulers"]] == [positives, positives]
    assert segmenter["last_epoch"] == 2 * positives  # every step of both cycles taken, none beyond


def test_explain_works_on_a_cascade_run(busi_run):
    from medrun.explain.command import explain_run

    import math

    out_dir, result = explain_run(busi_run[0], n=3, compare=["gradcam"])
    assert result["layer"].startswith("segmenter.net.decoder.blocks.")
    assert len(result["images"]) == 3
    assert all(math.isfinite(v) for v in result["faithfulness"]["gradcam"].values())
    assert all((out_dir / f"cam_{r['id']}.png").stat().st_size > 500 for r in result["images"])
    # the CAM mass share is reported for images with a lesion, as a fraction
    shares = [r["cam_mass_in_mask"] for r in result["images"] if r["mask_pixels"]]
    assert all(s is None or 0 <= s <= 1 for s in shares)  # None: an all-zero map, left out


def test_compare_puts_the_cascade_and_its_baseline_side_by_side(busi_run, shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # compare writes under outputs/ of the working folder
    from medrun.cli import main

    cascade_dir = busi_run[0]
    baseline = medrun.compose("train", ["experiment=unet_resnet34_siim", f"data.root={shared_data}/busi_siim",
                                        "data=busi_siim", "model.encoder=resnet18", "model.encoder_weights=null",
                                        "data.image_size=[32,32]", "trainer.max_epochs=1",
                                        "+trainer.limit_train_batches=2", "logger=none", "callbacks.progress=none",
                                        "task.tta=none", f"cv.splits_file={cascade_dir}/splits.json",  # its 2 folds
                                        f"paths.output_dir={tmp_path}"])
    baseline_dir, _ = medrun.train(baseline)
    assert main(["compare", str(cascade_dir), str(baseline_dir)]) == 0
    out = capsys.readouterr().out
    assert "cascade_busi" in out and "unet_resnet34_siim" in out
    assert "cascade, searched threshold" in out and "unet_resnet34_siim" in out and ": searched threshold" in out
    assert "| *reference: all-empty* |" in out  # the trivial row of the same test parts, marked as a reference
    from medrun.compare import compare_runs

    _, twice = compare_runs([baseline_dir, baseline_dir], tmp_path / "cmp")
    assert len(twice["metrics"]) == 2  # one row per run folder, even for the same name twice
    other = tmp_path / "other"  # the baseline, as if one of its test images had been split into training
    shutil.copytree(baseline_dir, other, ignore=shutil.ignore_patterns("checkpoints"))
    splits = json.loads((other / "splits.json").read_text())
    splits["folds"][0]["train"].append(splits["folds"][0]["test"].pop())
    (other / "splits.json").write_text(json.dumps(splits))
    assert main(["compare", str(cascade_dir), str(other)]) == 2
    assert "was scored on other test parts" in capsys.readouterr().err

    # task.baseline_run: the baseline's rows join the cascade's own Table 5.1 (summary.md and cv_summary.json)
    cascade = ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", *TINY_CASCADE,
               f"paths.output_dir={tmp_path}"]
    with pytest.raises(MedrunError, match=f"task.baseline_run={other} was scored on other test parts"):
        medrun.train(medrun.compose("train", [*cascade, "cv.folds=2", f"task.baseline_run={other}"]))
    joined_dir, joined = medrun.train(medrun.compose("train", [*cascade, f"task.baseline_run={baseline_dir}",
                                                               f"cv.splits_file={cascade_dir}/splits.json"]))
    base = json.loads((baseline_dir / "cv_summary.json").read_text())["postprocessing_table"]
    assert {f"baseline U-Net, {row}": v for row, v in base.items()}.items() <= joined["table_5_1"].items()
    assert "cascade, searched threshold" in joined["table_5_1"]
    assert "| baseline U-Net, searched threshold |" in (joined_dir / "summary.md").read_text()


def test_the_segmenter_learns_from_batches_of_positive_images_and_the_thesis_classifier_is_a_named_leak(
        shared_data, tmp_path, monkeypatch):
    from medrun.tasks.cascade import CascadeTask as Task

    seen = {"classifier": set(), "segmenter": set(), "segmenter batches all positive": []}
    step = Task.training_step

    def recording(self, batch, batch_idx):
        seen["classifier"] |= set(batch["train"]["index"].tolist())
        if (positives := batch[cascade.SEGMENTER_PART]) is not None:
            seen["segmenter"] |= set(positives["index"].tolist())
            seen["segmenter batches all positive"].append(bool(positives["target"].flatten(1).any(1).all()))
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Task, "training_step", recording)
    base = ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "cv=holdout", *TINY_CASCADE,
            "+trainer.limit_val_batches=1", "++trainer.limit_train_batches=1.0", "data.batch_size=32",
            f"paths.output_dir={tmp_path}"]
    runs = {}
    for train_on in ("fold", "whole_training_set_leaks"):
        for part in seen.values():
            part.clear()
        cfg = medrun.compose("train", [*base, f"task.classifier.train_on={train_on}"])
        run_dir, summary = medrun.train(cfg)
        fold = json.loads((run_dir / "splits.json").read_text())["folds"][0]
        store = build_store(cfg, preload=False)
        parts = {k: set(store.indices(fold[k])) for k in ("train", "val", "test")}
        parts["positive"] = {i for i in range(len(store)) if store.get(i)[1].any()}
        runs[train_on] = ({k: type(v)(v) for k, v in seen.items()}, parts, summary, run_dir)
    saw, parts, summary, _ = runs["fold"]
    assert saw["classifier"] == parts["train"]  # the leak-free default
    # the segmenter: every positive image of the training part, in batches of positive images only (Section
    # 4.4.2), with cv.val_fraction (0.2) of the positives outside the test part kept for validation
    assert saw["segmenter"] == parts["train"] & parts["positive"]
    assert saw["segmenter batches all positive"] and all(saw["segmenter batches all positive"])
    val, train = (len(parts[k] & parts["positive"]) for k in ("val", "train"))
    assert val / (val + train) == pytest.approx(0.2, abs=0.03)
    assert "note" not in summary
    saw, parts, summary, run_dir = runs["whole_training_set_leaks"]
    assert saw["classifier"] == parts["train"] | parts["val"] | parts["test"]  # the thesis: every image of the fold
    assert saw["segmenter"] == parts["train"] & parts["positive"]  # the segmenter: the training part only
    assert "task.classifier.train_on=whole_training_set_leaks" in summary["note"]
    assert "classifier trained on each fold's validation and test images" in (run_dir / "summary.md").read_text()
    with pytest.raises(MedrunError, match="task.classifier.train_on='all'; valid: fold, whole_training_set_leaks"):
        medrun.train(medrun.compose("train", [*base, "task.classifier.train_on=all"]))


def test_classifier_scores_leave_out_what_a_set_without_negatives_leaves_undefined():
    score, positive = torch.tensor([0.9, 0.2, 0.7]), torch.tensor([True, True, True])
    assert cascade.classifier_scores(score, 0.5, positive) == {"classifier_sensitivity": pytest.approx(2 / 3)}
    mixed = cascade.classifier_scores(score, 0.5, torch.tensor([True, False, False]))
    assert mixed == {"classifier_sensitivity": 1.0, "classifier_specificity": 0.5, "classifier_auc": 1.0}
