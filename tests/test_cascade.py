"""The "One Case" cascade (#12): the SIIM-ACR RLE codec on real rows, the reader on generated and real
SIIM-layout folders, positive-only segmenter training, the blanking rule, thresholds never chosen on a test
part, and the cascade end to end on the real BUSI images in the SIIM layout."""
import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

import medrun
import medrun.tasks.cascade as cascade
from medrun.cli import main
from medrun.config import to_plain
from medrun.data.build import build_store
from medrun.data.check import check_data
from medrun.data.rle import decode, encode
from medrun.errors import MedrunError
from medrun.evaluate import evaluate_run
from medrun.inference import saved_config
from medrun.tasks.cascade import CascadeTask
from medrun.evaluation.decision import Decision
from medrun.evaluation.postprocess import apply_triplet, search_cascade, search_triplet

TINY_CASCADE = ["data.image_size=[64,64]", "model.classifier_size=[64,64]", "model.classifier.backbone=resnet18",
                "model.segmenter.encoder=resnet18", "trainer.max_epochs=1", "logger=none", "callbacks.progress=none",
                "+trainer.limit_train_batches=2", "data.batch_size=8", "task.tta=none",
                "task.triplet.tops=[0.5,0.7]", "task.triplet.areas=[0,2000]", "task.triplet.bottoms=[0.3]",
                "task.triplet.min_components=[0,100]"]


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


def test_only_positive_images_train_the_segmenter(tmp_path):
    cfg = medrun.compose("train", ["experiment=cascade_siim", "data.root=x", *TINY_CASCADE, "model.classifier.pretrained=null",
                                   "model.segmenter.encoder_weights=null"])
    task = CascadeTask(to_plain(cfg))
    seen = []
    segment = task.net.segment

    def recording(x):
        seen.append(x.shape[0])
        return segment(x)

    task.net.segment = recording
    target = torch.zeros(4, 64, 64, dtype=torch.long)
    target[1, 10:20, 10:20] = 1
    target[3, 5:9, 5:9] = 1
    loss_c, loss_s = task._losses(torch.rand(4, 3, 64, 64), target)
    assert seen == [2] and loss_s is not None  # two of the four images have a mask
    seen.clear()
    _, loss_s = task._losses(torch.rand(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.long))
    assert seen == [] and loss_s is None  # a batch of negatives leaves the segmenter alone


def test_blanking_and_triplet_rules():
    seg = torch.zeros(3, 8, 8)
    seg[:, 2:6, 2:6] = 0.9
    seg[2, 0, 0] = 0.95  # a one-pixel speck
    cls = torch.tensor([0.2, 0.8, 0.8])
    masks = Decision(threshold=0.5, decision_threshold=0.5).masks(seg, cls)
    assert masks[0].sum() == 0 and masks[1].sum() == 16 and masks[2].sum() == 17
    assert Decision(threshold=0.5, decision_threshold=0.5, min_area=17).masks(seg, cls)[1].sum() == 0  # too small
    triplet = apply_triplet(seg, top=0.92, area=1, bottom=0.5, min_component=2)
    assert triplet[0].sum() == 0 and triplet[1].sum() == 0  # no pixel above top: empty
    assert triplet[2].sum() == 16  # drawn at bottom, without the one-pixel component


def test_cascade_search_matches_brute_force_and_triplet_search_finds_the_rule():
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(12, 16, 16, dtype=torch.long)
    target[6:, 4:10, 4:10] = 1  # half the images empty
    seg = (target * 0.6 + torch.rand(12, 16, 16, generator=g) * 0.45).clamp(0, 1)
    seg[:6, 1:9, 1:9] = 0.95  # confident false lesions, larger than any min area: only the classifier blanks them
    cls = torch.cat([torch.rand(6, generator=g) * 0.4, 0.6 + torch.rand(6, generator=g) * 0.4])
    cls[3] = cls[7] = 0.5  # tied scores at a decision threshold
    found = search_cascade(seg, cls, target, decisions=[0.3, 0.5, 0.7], min_areas=(0, 20, 40), bins=20)

    def dice(masks):
        tp = (masks & target.bool()).flatten(1).sum(1).float()
        den = masks.flatten(1).sum(1) + target.flatten(1).sum(1)
        return torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.ones_like(tp)).mean().item()

    def apply(d, t, a):
        return Decision(threshold=t, min_area=a, decision_threshold=d).masks(seg, cls)

    brute = max((dice(apply(d, t / 20, a)), d, t / 20, a)
                for d in (0.3, 0.5, 0.7) for a in (0, 20, 40) for t in range(1, 20))
    assert found["dice"] == pytest.approx(brute[0], abs=1e-6) and found["dice"] > 0.9
    chosen = apply(found["decision_threshold"], found["threshold"], found["min_area"])
    assert dice(chosen) == pytest.approx(found["dice"], abs=1e-6)
    assert found["decision_threshold"] >= 0.5  # the classifier separates: negatives are blanked
    best = search_triplet(seg, target, tops=(0.5, 0.9), areas=(0, 100_000), bottoms=(0.5,), min_components=(0,))
    assert best["dice"] >= dice(apply_triplet(seg, 0.5, 0, 0.5, 0)) - 1e-6


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
    assert {"decision_threshold", "threshold", "min_area"} <= set(result["postprocessing"])
    assert "classifier_auc" in result["rows"]["threshold"]
    inputs = shared_data / "busi_siim" / "dicom-images-train"
    code = main(["predict", f"run={run_dir}", f"input={inputs}", f"output={tmp_path / 'pred'}", "format=siim_rle"])
    assert code == 0
    rows = list(csv.reader(open(tmp_path / "pred" / "submission.csv")))
    assert rows[0] == ["ImageId", "EncodedPixels"] and len(rows) == 268
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
            "data.image_size=[64,64]", "cv=holdout", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
            "logger=none", "callbacks.progress=none", f"paths.output_dir={tmp_path}"]
    # the paper config asks for ImageNet weights: without a local file it fails at once, naming the key
    with pytest.raises(MedrunError, match="model.encoder_weights='imagenet' needs a local file"):
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
    assert all(torch.equal(encoder[k], weights[k]) for k in weights)  # the loaded weights, frozen before epoch 6
    decoder = [k for k in trained if ".decoder." in k and k.endswith("weight")]
    torch.manual_seed(0)
    assert decoder and any(trained[k].abs().sum() > 0 for k in decoder)


def test_cascade_stages_train_for_their_own_epochs_with_one_cycle_schedules(shared_data, tmp_path):
    from medrun.runs import load_checkpoint

    cfg = medrun.compose("train", ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "cv=holdout",
                                   *TINY_CASCADE, "trainer.max_epochs=3", "task.classifier.epochs=3",
                                   "task.segmenter.epochs=2", "task.segmenter.freeze_encoder_epochs=1",
                                   "task.classifier.scheduler.name=onecycle", "task.segmenter.scheduler.name=onecycle",
                                   "+trainer.limit_val_batches=1", f"paths.output_dir={tmp_path}"])
    paper = medrun.compose("train", ["experiment=cascade_siim"])
    assert (paper.task.classifier.epochs, paper.task.segmenter.epochs, paper.task.segmenter.freeze_encoder_epochs,
            paper.trainer.max_epochs) == (127, 18, 6, 127)
    assert paper.task.classifier.scheduler.name == paper.task.segmenter.scheduler.name == "onecycle"
    seen = []
    from medrun.tasks.cascade import CascadeTask as Task

    step = Task.training_step

    def recording(self, batch, batch_idx):
        encoder = self.net.segmenter.backbone
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        out = step(self, batch, batch_idx)
        unchanged = all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
        seen.append((self.current_epoch, self.stages(), unchanged))
        return out

    Task.training_step = recording
    try:
        run_dir, _ = medrun.train(cfg)
    finally:
        Task.training_step = step
    # epoch 0: both stages, the encoder frozen (weights and batch-norm statistics); epoch 1: encoder trains;
    # epoch 2: the classifier alone
    assert [s for e, s, _ in seen][::2] == [(True, True, True), (True, True, False), (True, False, False)]
    assert all(unchanged for e, _, unchanged in seen if e == 0) and not all(u for e, _, u in seen if e == 1)
    state = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 2  # last.ckpt is the last epoch's, improved or not (what resume continues from)
    steps = [max(int(s["step"]) for s in opt["state"].values()) for opt in state["optimizer_states"]]
    assert steps == [3 * 2, 2 * 2]  # 2 batches an epoch: classifier 3 epochs, segmenter 2
    totals = [s["total_steps"] for s in state["lr_schedulers"]]
    assert totals == [6, 4]  # each stage's one-cycle spans its own epochs


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
    assert all(0 <= s <= 1 for s in shares)


def test_compare_puts_the_cascade_and_its_baseline_side_by_side(busi_run, shared_data, tmp_path, capsys):
    from medrun.cli import main

    cascade_dir = busi_run[0]
    baseline = medrun.compose("train", ["experiment=unet_resnet34_siim", f"data.root={shared_data}/busi_siim",
                                        "data=busi_siim", "model.encoder=resnet18", "model.encoder_weights=null",
                                        "data.image_size=[64,64]",
                                        "cv.folds=2", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                                        "logger=none", "callbacks.progress=none", "task.tta=none",
                                        f"cv.splits_file={cascade_dir}/splits.json", f"paths.output_dir={tmp_path}"])
    baseline_dir, _ = medrun.train(baseline)
    assert main(["compare", str(cascade_dir), str(baseline_dir)]) == 0
    out = capsys.readouterr().out
    assert "cascade_busi" in out and "unet_resnet34_siim" in out
    assert "cascade, searched threshold" in out and "unet_resnet34_siim" in out and ": searched threshold" in out
    assert "| *reference: all-empty* |" in out  # the trivial row of the same test parts, marked as a reference
    from medrun.compare import compare_runs

    _, twice = compare_runs([baseline_dir, baseline_dir], tmp_path / "cmp")
    assert len(twice["metrics"]) == 2  # one row per run folder, even for the same name twice
    other = medrun.train(medrun.compose("train", [*[o for o in baseline.overrides if not o.startswith("cv.splits_file")],
                                                  "seed=7"]))[0]
    assert main(["compare", str(cascade_dir), str(other)]) == 2
    assert "was scored on other test parts" in capsys.readouterr().err

    # task.baseline_run: the baseline's rows join the cascade's own Table 5.1 (summary.md and cv_summary.json)
    cascade = ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "cv.folds=2", *TINY_CASCADE,
               f"paths.output_dir={tmp_path}"]
    with pytest.raises(MedrunError, match=f"task.baseline_run={other} was scored on other test parts"):
        medrun.train(medrun.compose("train", [*cascade, f"task.baseline_run={other}"]))
    joined_dir, joined = medrun.train(medrun.compose("train", [*cascade, f"task.baseline_run={baseline_dir}",
                                                               f"cv.splits_file={cascade_dir}/splits.json"]))
    base = json.loads((baseline_dir / "cv_summary.json").read_text())["postprocessing_table"]
    assert {f"baseline U-Net, {row}": v for row, v in base.items()}.items() <= joined["table_5_1"].items()
    assert "cascade, searched threshold" in joined["table_5_1"]
    assert "| baseline U-Net, searched threshold |" in (joined_dir / "summary.md").read_text()


def test_the_thesis_whole_training_set_classifier_is_a_named_leak(shared_data, tmp_path, monkeypatch):
    from medrun.tasks.cascade import CascadeTask as Task

    seen = {"classifier": set(), "segmenter": set()}
    losses = Task._losses

    def recording(self, x, target, classifier=True, segmenter=True, index=None):
        if index is not None:  # training batches only
            seen["classifier"] |= set(index.tolist())
            allowed = self.segmenter_indices
            positive = target.flatten(1).any(1)
            chosen = positive if allowed is None else positive & torch.isin(index, allowed)
            seen["segmenter"] |= set(index[chosen].tolist())
        return losses(self, x, target, classifier, segmenter, index)

    monkeypatch.setattr(Task, "_losses", recording)
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
        runs[train_on] = ({k: set(v) for k, v in seen.items()}, parts, summary, run_dir)
    saw, parts, summary, _ = runs["fold"]
    assert saw["classifier"] == parts["train"] and saw["segmenter"] <= parts["train"]  # the leak-free default
    assert "note" not in summary
    saw, parts, summary, run_dir = runs["whole_training_set_leaks"]
    assert saw["classifier"] == parts["train"] | parts["val"] | parts["test"]  # the thesis: every image of the fold
    assert saw["segmenter"] and saw["segmenter"] <= parts["train"]  # the segmenter: the training part only
    assert "task.classifier.train_on=whole_training_set_leaks" in summary["note"]
    assert "classifier trained on each fold's validation and test images" in (run_dir / "summary.md").read_text()
    with pytest.raises(MedrunError, match="task.classifier.train_on='all'; valid: fold, whole_training_set_leaks"):
        medrun.train(medrun.compose("train", [*base, "task.classifier.train_on=all"]))
