"""`medrun eval` and `medrun predict` on real data: threshold search without the test set, the stored decision,
outputs at the inputs' own size."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from medrun.evaluate import evaluate_run
from medrun.predict import predict_files
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def covid_run(shared_data, module_tmp):
    out = module_tmp
    cfg = medrun.compose("train", ["data=covid_ct", f"data.root={shared_data}/covid19_ct_seg", *TINY_MODEL,
                                   "cv.folds=2", "name=covid", f"paths.output_dir={out}"])
    return medrun.train(cfg)[0]


def test_eval_on_the_fixed_test_set_never_searches_on_it(covid_run):
    seen = []
    out_dir, result = evaluate_run(covid_run, tta="flips", threshold="search", min_areas=(0, 10),
                                   search_hook=seen.extend)
    splits = json.loads((covid_run / "splits.json").read_text())
    test_ids = set(splits["fixed_test"])
    assert len(test_ids) == 48 and seen and not set(seen) & test_ids
    assert sorted(seen) == sorted(i for f in splits["folds"] for i in f["test"])  # out-of-fold, training set only
    assert result["evaluated_on"] == "test" and result["n"] == 48 and result["notes"] == []
    assert list(result["rows"]) == ["argmax", "threshold", "tta"]
    assert 0 < result["postprocessing"]["threshold"] < 1
    table = (out_dir / "summary.md").read_text()
    assert "| searched threshold |" in table and "| TTA (flips) |" in table and "Dice (dataset)" in table
    post = result["postprocessing"]  # the decision in words, with the numbers of postprocessing.json
    assert (f"Post-processing: TTA flips; foreground where its probability >= {post['threshold']:.4g};" in table
            and f"searched for Dice (on the search set: {post['search_dice']:.4f})" in table)
    # the reference rows on the same 48 test images, marked as references in the table
    assert {"all-empty", "all-foreground"} <= set(result["trivial"]) and result["trivial"]["all-empty"]["dice_micro"] == 0
    assert "| *reference: all-empty* |" in table and "| *reference: all-foreground* |" in table
    rows = list(csv.DictReader(open(out_dir / "per_sample.csv")))
    assert {r["id"] for r in rows} == test_ids and all(r["fold"] == "ensemble" for r in rows)
    dice = np.array([float(r["dice"]) for r in rows])
    assert dice.mean() == pytest.approx(result["rows"]["tta"]["dice"], abs=1e-5)
    # the last row's 95% interval: a percentile bootstrap over the test images, the per-image Dice's resampled mean
    from scipy.stats import bootstrap

    interval = result["interval"]
    assert interval["row"] == "tta" and interval["level"] == 0.95 and interval["resamples"] == 1000
    per_image = bootstrap((dice,), np.mean, vectorized=False, n_resamples=1000, method="percentile",
                          random_state=0).confidence_interval
    assert interval["bounds"]["dice"] == pytest.approx([per_image.low, per_image.high], abs=1e-5)
    assert "| *95% CI of TTA (flips)* | [{:.4f}, {:.4f}]".format(*interval["bounds"]["dice"]) in table
    for name in ("worst", "median", "best"):
        assert (out_dir / f"overlay_{name}.png").stat().st_size > 1000
    assert result["overlays"]["worst"] == rows[int(np.argmin(dice))]["id"]
    again, _ = evaluate_run(covid_run)
    assert again != out_dir and again.parent == out_dir.parent  # never overwrites an earlier evaluation


def test_predict_on_real_images_at_their_size(covid_run, shared_data, tmp_path, capsys):
    images = shared_data / "covid19_ct_seg/Dataset/TestingSet/LungInfection-Test/Imgs"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sorted(images.glob("*.jpg"))[:5]:
        (inputs / p.name).symlink_to(p)
    (inputs / "broken.png").write_text("not an image")
    code = main(["predict", f"run={covid_run}", f"input={inputs}", f"output={tmp_path / 'out'}", "save_probabilities=true"])
    assert code == 1 and "broken.png" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processed"] == 5 and [f["file"] for f in report["failed"]] == ["broken.png"]
    for p in sorted(images.glob("*.jpg"))[:5]:
        mask = Image.open(tmp_path / "out" / f"{p.stem}.png")
        assert mask.size == Image.open(p).size
        assert set(np.unique(np.array(mask))) <= {0, 255}
        assert np.load(tmp_path / "out" / f"{p.stem}.npy").shape == mask.size[::-1]
    with pytest.raises(MedrunError, match="is not empty"):
        predict_files(covid_run, inputs, tmp_path / "out")


def test_predict_uses_the_runs_own_decision_unless_another_is_named(covid_run, shared_data, tmp_path):
    own, _ = evaluate_run(covid_run, tta="flips", threshold="search")
    other_site = tmp_path / "other_site"
    other_site.symlink_to(shared_data / "covid19_ct_seg", target_is_directory=True)  # the same layout elsewhere
    other, result = evaluate_run(covid_run, tta="d4", data_overrides=[f"data.root={other_site}"])
    assert result["evaluated_on"] == "test" and other.name > own.name  # the newest eval is the other site's
    decision = json.loads((other / "postprocessing.json").read_text())
    assert decision["provenance"]["scored_on"] == [f"data.root={other_site}"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = next((shared_data / "covid19_ct_seg/Dataset/TestingSet/LungInfection-Test/Imgs").glob("*.jpg"))
    (inputs / image.name).symlink_to(image)
    default = predict_files(covid_run, inputs, tmp_path / "default")
    assert default["tta"] == "flips" and default["postprocessing"] == (
        f"eval/{own.name} (searched on out-of-fold predictions; scored on the run's own data)")
    assert json.loads((tmp_path / "default" / "report.json").read_text())["postprocessing"] == default["postprocessing"]
    named = predict_files(covid_run, inputs, tmp_path / "named", postprocessing=other.name)
    assert named["tta"] == "d4" and named["postprocessing"].startswith(f"eval/{other.name} (not searched; scored on "
                                                                       f"data.root={other_site})")
    plain = predict_files(covid_run, inputs, tmp_path / "plain", postprocessing="none")
    # without a stored decision the report names the run's own threshold, the one its masks were drawn with
    assert plain["tta"] == "none" and plain["threshold"] == 0.5 and plain["postprocessing"].startswith("none")
    with pytest.raises(MedrunError, match=f"postprocessing=nope: no eval/nope/postprocessing.json in .*valid: .*{own.name}"):
        predict_files(covid_run, inputs, tmp_path / "bad", postprocessing="nope")


def test_classifier_eval_and_predict_on_dicom(shared_data, tmp_path):
    cfg = medrun.compose("train", ["experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct",
                                   "cv.folds=2", "data.image_size=[32,32]", "trainer.max_epochs=1", "logger=none",
                                   "callbacks.progress=none", "model=timm", "model.backbone=resnet18",
                                   "data.positive=False", f"paths.output_dir={tmp_path}"])
    run_dir, summary = medrun.train(cfg)
    assert summary["positive_class"] == "False"  # the run's own summary says which class *_positive is about
    assert "are about class **False**" in (run_dir / "summary.md").read_text()
    out_dir, result = evaluate_run(run_dir, tta="flips", threshold="search", objective="youden")
    assert result["evaluated_on"] == "out_of_fold" and result["n"] == 12
    # data.positive names the first class: the search and the scores are both about it (searched and scored on
    # the same out-of-fold predictions, the searched cut's sensitivity is the row's)
    search, row = result["postprocessing"]["search"], result["rows"]["threshold"]
    assert row["sensitivity_positive"] == pytest.approx(search["sensitivity"]) == pytest.approx(row["sensitivity_False"])
    assert row["specificity_positive"] == pytest.approx(search["specificity"])
    assert result["positive_class"] == "False" and "| sensitivity (False) | specificity (False) |" in \
        (out_dir / "summary.md").read_text()
    assert (f"Post-processing: TTA flips; False where its probability >= {search['threshold']:.4g}; threshold "
            f"searched for youden (on the search set: sensitivity {search['sensitivity']:.3f}") in \
        (out_dir / "summary.md").read_text()
    majority = result["trivial"]["majority class"]  # the reference row is about the same class
    assert majority["f1_positive"] == majority["f1_False"] != majority["f1_True"]
    assert "optimistic" in result["notes"][0] and "optimistic" in (out_dir / "summary.md").read_text()
    assert 0 <= result["postprocessing"]["threshold"] <= 1 and set(result["rows"]) == {"argmax", "threshold", "tta"}
    assert (out_dir / "roc.png").is_file() and (out_dir / "precision_recall.png").is_file()
    bounds = result["interval"]["bounds"]  # resampled within each class: AUC is defined in every resample
    assert bounds["auc_macro"][0] <= result["rows"]["tta"]["auc_macro"] <= bounds["auc_macro"][1]
    assert {"accuracy", "balanced_accuracy", "auc_macro", "sensitivity_positive"} <= set(bounds)
    # the majority-class row: each out-of-fold prediction gets its own fold's DummyClassifier
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import accuracy_score

    splits = json.loads((run_dir / "splits.json").read_text())
    store = medrun.api.build_store(cfg, preload=False)
    label = {s.id: s.label for s in store.samples}
    truth, expected = [], []
    for f in splits["folds"]:
        y = [label[i] for i in f["train"]]
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y), 1)), y)
        truth += [label[i] for i in f["test"]]
        expected += list(dummy.predict(np.zeros((len(f["test"]), 1))))
    assert result["trivial"]["majority class"]["accuracy"] == pytest.approx(accuracy_score(truth, expected))
    from medrun.errors import MedrunError

    with pytest.raises(MedrunError, match="format=siim_rle writes segmentation masks; this run is a classifier"):
        predict_files(run_dir, shared_data / "dicom_ct" / "dicom_dir", tmp_path / "rle", format="siim_rle")
    report = predict_files(run_dir, shared_data / "dicom_ct" / "dicom_dir", tmp_path / "pred")
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    files = sorted(p.name for p in (shared_data / "dicom_ct/dicom_dir").glob("*.dcm"))
    assert report["processed"] == 12 and sorted(r["file"] for r in rows) == files
    assert all(r["prediction"] in ("False", "True") for r in rows)
    # the searched threshold, and the class it is about (data.positive=False); no mask settings for a classifier
    assert report["threshold"] == result["postprocessing"]["threshold"] and report["threshold_of"] == "False"
    assert "min_area_fraction" not in report
    tags = {str(pydicom.dcmread(shared_data / "dicom_ct/dicom_dir" / f, stop_before_pixels=True).PatientID) for f in files}
    for f in (tmp_path / "pred").iterdir():
        assert not any(t in f.read_text() for t in tags)


def test_eval_options_fail_before_anything_is_written(covid_run, capsys):
    before = sorted((covid_run / "eval").iterdir()) if (covid_run / "eval").is_dir() else []
    for argv, expected in ((["tta=sideways"], "tta='sideways'; valid: none, flips, d4"),
                           (["threshold=magic"], "threshold='magic'; valid: fixed, search"),
                           (["train.lr=1"], "bad override")):
        assert main(["eval", f"run={covid_run}", *argv]) == 2
        assert expected in capsys.readouterr().err
    after = sorted((covid_run / "eval").iterdir()) if (covid_run / "eval").is_dir() else []
    assert after == before


@pytest.mark.parametrize("copied", ["no", "copy", "renamed"])
def test_eval_on_the_runs_own_training_data_scores_only_unseen_samples(covid_run, shared_data, tmp_path, copied):
    splits = json.loads((covid_run / "splits.json").read_text())
    root = shared_data / "covid19_ct_seg"
    if copied != "no":  # a copy of the training folder is still the training data, under other names too
        root = Path(shutil.copytree(root, tmp_path / "copy"))
    if copied == "renamed":
        for path in (root / "Dataset" / "TrainingSet").rglob("*.*"):
            path.rename(path.with_name(f"renamed_{path.name}"))
    _, result = evaluate_run(covid_run, data_overrides=[f"data.root={root}"])
    seen = {i for f in splits["folds"] for part in ("train", "val") for i in f[part]}
    assert result["n"] == 98 - len(seen) == 48  # the fixed test images only: the 50 training images are left out
    assert result["notes"][0].startswith(f"{len(seen)} sample(s) of the given data were in the run's training")


def test_predict_refuses_bad_options_before_writing(covid_run, shared_data, tmp_path):
    from medrun.errors import MedrunError

    images = shared_data / "covid19_ct_seg" / "Dataset" / "TestingSet" / "LungInfection-Test" / "Imgs"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(MedrunError, match="output=.*a_file is a file: give a new folder"):
        predict_files(covid_run, images, tmp_path / "a_file")
    with pytest.raises(MedrunError, match="threshold='abc' is not a number"):
        predict_files(covid_run, images, tmp_path / "p", threshold="abc")
    assert not (tmp_path / "p").exists()


def test_predict_lists_nested_inputs_without_hidden_and_system_files(shared_data, tmp_path):
    from medrun.predict import list_inputs

    src = shared_data / "covid19_ct_seg/Dataset/TestingSet/LungInfection-Test/Imgs"
    for path in ("a/18.jpg", "b/c/21.jpg", "__MACOSX/a/._18.jpg", ".ipynb_checkpoints/36.jpg", "a/._21.jpg"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to(src / path.split("/")[-1].lstrip("._"))
    assert [p.relative_to(tmp_path).as_posix() for p in list_inputs(tmp_path)] == ["a/18.jpg", "b/c/21.jpg"]
    (tmp_path / "b/18.jpg").symlink_to(src / "18.jpg")
    with pytest.raises(MedrunError, match="several files are named '18'"):
        list_inputs(tmp_path)
