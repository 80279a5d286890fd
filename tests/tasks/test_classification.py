"""Classification readers and training on the real files in ../shared/data."""
import csv
import json

import numpy as np
import pydicom
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

import medrun
from medrun.api import build_store
from medrun.data import build_dataset
from medrun.errors import MedrunError

FAST = ["data.image_size=[32,32]", "trainer.max_epochs=1", "logger=none", "callbacks.progress=none", "model.pretrained=null",
        "data.batch_size=8", "model=timm", "model.backbone=resnet18", "html_report=false"]


def compose(*overrides):
    return medrun.compose("train", list(overrides))


def test_medmnist_official_splits(shared_data):
    cfg = compose("experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist")
    ds = build_dataset(cfg.data)
    subsets = [s.subset for s in ds.samples]
    assert (subsets.count("train"), subsets.count("val"), subsets.count("test")) == (546, 78, 156)
    image, label = ds.load(ds.samples[0])
    assert image.shape == (28, 28, 3) and label in (0, 1)  # grey repeated to 3 channels
    retina = build_dataset(compose("experiment=densenet121_retinamnist", f"data.root={shared_data}/medmnist").data)
    assert {s.label for s in retina.samples} == {0, 1, 2, 3, 4}
    splits = medrun.api.build_splits(cfg, build_store(cfg, preload=False))
    (fold,) = splits["folds"]
    assert len(fold["train"]) == 546 and len(fold["val"]) == 78 and len(fold["test"]) == 156


def test_dicom_csv_groups_by_patient_pseudonym(shared_data):
    cfg = compose("experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct")
    ds = build_dataset(cfg.data)
    assert len(ds.samples) == 12 and ds.classes == ["False", "True"]
    patients = {pydicom.dcmread(s.image, stop_before_pixels=True).PatientID for s in ds.samples}
    groups = {s.group for s in ds.samples}
    assert len(groups) == len(patients) == 8
    assert not groups & patients and all(g.startswith("patient_") for g in groups)
    image, label = ds.load(ds.samples[0])
    assert image.shape == (512, 512, 1) and image.dtype == np.uint8


def test_class_folders_and_csv_errors(shared_data, tmp_path):
    src = shared_data / "isbi2012/membrane/train/image"
    for cls, stems in (("a", "012"), ("b", "345")):
        (tmp_path / cls).mkdir()
        for s in stems:
            (tmp_path / cls / f"{s}.png").symlink_to(src / f"{s}.png")
    ds = build_dataset(compose("experiment=densenet121_folder", f"data.root={tmp_path}").data)
    assert ds.classes == ["a", "b"] and [s.label for s in ds.samples] == [0, 0, 0, 1, 1, 1]
    # trains on the real slices; the pooled metrics agree with scikit-learn on the saved predictions
    run_dir, summary = medrun.train(compose("experiment=densenet121_folder", f"data.root={tmp_path}", *FAST, "cv=kfold",
                                            "cv.folds=3", "cv.val_fraction=0.34", "task.scheduler.name=onecycle",
                                            f"paths.output_dir={tmp_path / 'out'}"))
    rows = oof(run_dir, [0, 1, 2])
    y, p = np.array([int(r["true"]) for r in rows]), np.array([int(r["pred"]) for r in rows])
    assert summary["pooled_out_of_fold"]["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert summary["pooled_out_of_fold"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    table = tmp_path / "labels.csv"
    table.write_text("file,diagnosis\na/0.png,x\nb/3.png,y\n")
    with pytest.raises(MedrunError, match=r"labels.csv: no column 'image' \(data.image_column\); columns are file, diagnosis"):
        build_dataset(compose("data=csv", f"data.csv={table}").data)
    table.write_text("image,label\na/0.png,x\nb/9.png,y\n")
    with pytest.raises(MedrunError, match=r"labels.csv row 3 names .*b/9.png, which does not exist"):
        build_dataset(compose("data=csv", f"data.csv={table}").data)


def test_pretrained_weights_not_in_the_cache_fail_offline_with_the_fetch_command():
    with pytest.raises(MedrunError, match=r"model.pretrained: the timm weights densenet121.ra_in1k are not in .* "
                                          r"`medrun weights fetch library=timm name=densenet121.ra_in1k`"):
        medrun.build_model(compose("experiment=quickstart_cls", "model.pretrained=imagenet"))


def oof(run_dir, folds):
    rows = [r for k in folds for r in csv.DictReader(open(run_dir / f"fold_{k}" / "predictions.csv"))]
    return rows


def test_dicom_kfold_metrics_match_sklearn_and_no_patient_tags_leak(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose("experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct", "cv.folds=2",
                  *FAST, "logger=wandb", f"paths.output_dir={tmp_path}")
    run_dir, summary = medrun.train(cfg)
    rows = oof(run_dir, [0, 1])
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in (shared_data / "dicom_ct/dicom_dir").glob("*.dcm"))
    y = np.array([int(r["true"]) for r in rows])
    p1 = np.array([float(r["prob_True"]) for r in rows])
    pooled = summary["pooled_out_of_fold"]
    assert pooled["accuracy"] == pytest.approx(accuracy_score(y, np.array([int(r["pred"]) for r in rows])))
    assert pooled["auc_True"] == pytest.approx(roc_auc_score(y, p1), abs=1e-5)
    for k in (0, 1):
        assert (run_dir / f"fold_{k}" / "roc.png").stat().st_size > 0
        assert (run_dir / f"fold_{k}" / "confusion_matrix.png").is_file()
    assert (run_dir / "oof_roc.png").is_file() and (run_dir / "oof_confusion_matrix.png").is_file()
    # Splits are grouped by patient: no patient on both sides.
    patient = {p.stem: pydicom.dcmread(p, stop_before_pixels=True).PatientID
               for p in (shared_data / "dicom_ct/dicom_dir").glob("*.dcm")}
    for f in json.loads((run_dir / "splits.json").read_text())["folds"]:
        assert not {patient[i] for i in f["test"]} & {patient[i] for i in f["train"] + f["val"]}
    # No tag value (ids, names, dates, accession numbers, institution) anywhere in the run folder or W&B.
    secrets = set()
    for p in (shared_data / "dicom_ct/dicom_dir").glob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for tag in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyDate",
                    "SeriesDate", "AcquisitionDate", "ContentDate", "InstitutionName", "StudyInstanceUID"):
            value = str(ds.get(tag, "") or "")
            if len(value) >= 6:
                secrets.add(value)
    assert len(secrets) >= 8
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert any("wandb" in str(f) for f in files)
    for f in files:
        data = f.read_bytes()
        leaked = [s for s in secrets if s.encode() in data]
        assert not leaked, f"{f} contains DICOM tag values {leaked}"


def test_multilabel_csv_on_real_images(shared_data, tmp_path):
    src = shared_data / "covid19_ct_seg/Dataset/TrainingSet/LungInfection-Train/Doctor-label"
    from PIL import Image

    lines = ["image,infection,large"]
    for gt in sorted(src.glob("GT/*.png"))[:16]:
        mask = np.array(Image.open(gt)) > 0
        lines.append(f"Imgs/{gt.stem}.jpg,{int(mask.any())},{int(mask.mean() > 0.02)}")
    table = tmp_path / "labels.csv"
    table.write_text("\n".join(lines) + "\n")
    (tmp_path / "Imgs").symlink_to(src / "Imgs")
    cfg = compose("experiment=densenet121_multilabel", f"data.csv={table}", "data.label_columns=[infection,large]",
                  "cv=kfold", "cv.folds=2", *FAST, f"paths.output_dir={tmp_path / 'out'}")
    run_dir, summary = medrun.train(cfg)
    assert cfg.data.mode == "multilabel"
    rows = oof(run_dir, [0, 1])
    assert len(rows) == 16 and {"true_infection", "prob_large", "pred_large"} <= set(rows[0])
    truth = np.array([[int(r["true_infection"]), int(r["true_large"])] for r in rows])
    pred = np.array([[int(r["pred_infection"]), int(r["pred_large"])] for r in rows])
    assert summary["pooled_out_of_fold"]["accuracy"] == pytest.approx((truth == pred).mean())


def test_medmnist_training_with_official_split(shared_data, tmp_path):
    cfg = compose("experiment=densenet121_pneumoniamnist", f"data.root={shared_data}/medmnist", *FAST,
                  "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2", f"paths.output_dir={tmp_path}")
    run_dir, summary = medrun.train(cfg)
    metrics = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
    assert metrics["sizes"]["test"] == 624 and len(metrics["confusion_matrix"]) == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == 624
    rows = oof(run_dir, [0])
    y = np.array([int(r["true"]) for r in rows])
    p = np.array([[float(r["prob_normal"]), float(r["prob_pneumonia"])] for r in rows])
    assert summary["mean"]["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert summary["mean"]["auc_pneumonia"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-4)
    # the majority-class reference row is scikit-learn's DummyClassifier fitted on this fold's training part
    from sklearn.dummy import DummyClassifier
    from sklearn.metrics import f1_score, recall_score

    store = medrun.api.build_store(cfg, preload=False)
    fold = json.loads((run_dir / "splits.json").read_text())["folds"][0]
    label = {s.id: s.label for s in store.samples}
    y_train, y_test = [label[i] for i in fold["train"]], np.array([label[i] for i in fold["test"]])
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
    predicted = dummy.predict(np.zeros((len(y_test), 1)))
    row = metrics["trivial"]["majority class"]
    assert row["accuracy"] == pytest.approx(accuracy_score(y_test, predicted))
    assert row["sensitivity_positive"] == pytest.approx(recall_score(y_test, predicted))
    assert row["f1_positive"] == pytest.approx(f1_score(y_test, predicted))
    assert row["auc_positive"] == 0.5 and summary["trivial"]["majority class"]["mean"]["accuracy"] == row["accuracy"]
    # every image the positive class: sensitivity 1 and no false negative of it, the numbers a table may quote
    everything = metrics["trivial"]["all pneumonia"]
    assert everything["sensitivity_pneumonia"] == 1.0 and everything["fn_pneumonia"] == 0
    assert everything["accuracy"] == pytest.approx(np.mean(y_test == 1))
    assert set(metrics["trivial"]) == {"majority class", "all normal", "all pneumonia"}


def test_focal_and_soft_f1_losses_train_and_reload_into_a_fresh_task(tmp_path):
    import torch

    from medrun.runs import load_checkpoint
    from medrun.tasks.classification import ClassificationTask

    for loss, module, weights in (("focal", "SoftmaxFocalLoss", ["task.class_weights=balanced"]),
                                  ("soft_f1", "SoftF1Loss", [])):
        cfg = compose("experiment=quickstart_cls", "data.count=24", *FAST, f"task.loss.name={loss}", *weights,
                      f"paths.output_dir={tmp_path}")
        run_dir, _ = medrun.train(cfg)
        ckpt = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")
        assert ckpt["hyper_parameters"]["config"]["task"]["loss"]["name"] == loss and ckpt["global_step"] > 0
        fresh = ClassificationTask(ckpt["hyper_parameters"]["config"])
        assert type(fresh.loss).__name__ == module
        fresh.load_state_dict(ckpt["state_dict"])  # strict: the class-weight buffer exists in a fresh task
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
        if weights:  # the minority class weighs more than the majority one, as computed on the training part
            w = ckpt["state_dict"]["loss.weight"]
            assert w.shape == (2,) and not torch.equal(w, torch.ones(2)) and torch.equal(fresh.loss.weight, w)
    # where weights cannot apply they are refused, not silently ignored
    with pytest.raises(MedrunError, match="class_weights=balanced does not apply to task.loss.name=soft_f1"):
        medrun.build_model(compose("experiment=quickstart_cls", "data.count=24", *FAST, "task.loss.name=soft_f1",
                                   "task.class_weights=balanced", f"paths.output_dir={tmp_path}"))


def test_soft_f1_loss_values():
    import torch

    from medrun.tasks.classification_losses import SoftF1Loss

    target = torch.tensor([0, 1, 1, 0])
    confident = torch.nn.functional.one_hot(target, 2).float() * 20 - 10
    assert SoftF1Loss(False)(confident, target) < 1e-3
    assert SoftF1Loss(False)(-confident, target) > 0.999
    multi = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert SoftF1Loss(True)(multi * 20 - 10, multi) < 1e-3


def test_isic2016_headerless_csv_layout(shared_data, tmp_path):
    images = shared_data / "covid19_ct_seg/Dataset/TrainingSet/LungInfection-Train/Doctor-label/Imgs"
    table = tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    table.write_text("0,benign\n1,malignant\n10,benign\n")
    ds = build_dataset(compose("experiment=vgg_gap_focal_isic2016", f"data.root={images}", f"data.csv={table}").data)
    assert [(s.id, s.label) for s in ds.samples] == [("0", 0), ("1", 1), ("10", 0)]


def test_isic2016_official_test_set_and_the_reference_codes_leaking_protocol(shared_data, tmp_path):
    """data.test_csv adds a fixed test set (labels 0.0 / 1.0 as in ISIC-2016's test CSV); cv=holdout scores it
    with validation from the training images, cv=holdout_test_as_val (MelaNet's code) validates on it."""
    covid = shared_data / "covid19_ct_seg/Dataset"
    train_dir, test_dir = covid / "TrainingSet/LungInfection-Train/Doctor-label/Imgs", covid / "TestingSet/LungInfection-Test/Imgs"
    train_ids = sorted(p.stem for p in train_dir.glob("*.jpg"))[:20]
    test_ids = sorted(p.stem for p in test_dir.glob("*.jpg"))[:8]
    (tmp_path / "train.csv").write_text("".join(f"{i},{'malignant' if n % 4 == 0 else 'benign'}\n"
                                                for n, i in enumerate(train_ids)))
    (tmp_path / "test.csv").write_text("".join(f"{i},{'1.0' if n % 2 else '0.0'}\n" for n, i in enumerate(test_ids)))
    data = ["experiment=vgg_gap_focal_isic2016_scratch", f"data.root={train_dir}", f"data.csv={tmp_path}/train.csv",
            f"data.test_image_dir={test_dir}", f"data.test_csv={tmp_path}/test.csv"]
    store = build_store(compose(*data, "cv=holdout"), preload=False)
    fixed = {s.id: s.label for s in store.samples if s.subset == "test"}
    assert fixed == {i: n % 2 for n, i in enumerate(test_ids)}  # 0.0 / 1.0 read as benign / malignant
    clean = medrun.api.build_splits(compose(*data, "cv=holdout"), store)
    leaky = medrun.api.build_splits(compose(*data, "cv=holdout_test_as_val"), store)
    for splits in (clean, leaky):
        assert sorted(splits["folds"][0]["test"]) == sorted(test_ids)
    assert not clean["test_used_for_model_selection"] and not set(clean["folds"][0]["val"]) & set(test_ids)
    assert leaky["test_used_for_model_selection"] and leaky["folds"][0]["val"] == leaky["folds"][0]["test"]
    assert sorted(leaky["folds"][0]["train"]) == train_ids
    (tmp_path / "overlap.csv").write_text(f"{train_ids[0]},0.0\n")
    with pytest.raises(MedrunError, match=f"overlap.csv lists 1 image.* that data.csv lists too \\({train_ids[0]}\\)"):
        build_store(compose(*data[:3], f"data.test_image_dir={train_dir}", f"data.test_csv={tmp_path}/overlap.csv"),
                    preload=False)
    with pytest.raises(MedrunError, match="cv=holdout_test_as_val needs a dataset with a fixed test set"):
        medrun.api.build_splits(compose(*data[:3], "cv=holdout_test_as_val"),
                                build_store(compose(*data[:3]), preload=False))


def test_softmax_focal_loss_reduces_to_cross_entropy():
    import torch

    from medrun.tasks.classification_losses import SoftmaxFocalLoss

    logits, target = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert SoftmaxFocalLoss(alpha=1.0, gamma=0.0, weighting="uniform")(logits, target) == pytest.approx(ce.item(), rel=1e-5)
    # gamma > 0 down-weights easy examples: the loss can only shrink.
    assert SoftmaxFocalLoss(alpha=1.0, gamma=2.0, weighting="uniform")(logits, target) < ce


def test_medmnist_pooled_for_kfold(shared_data):
    cfg = compose("experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist", "data.pooled=true",
                  "cv=kfold")
    store = build_store(cfg, preload=False)
    assert {s.subset for s in store.samples} == {None} and len(store.samples) == 780
    splits = medrun.api.build_splits(cfg, store)
    held = sorted(i for f in splits["folds"] for i in f["test"])
    assert held == sorted(s.id for s in store.samples)
    labels = {s.id: s.label for s in store.samples}
    rate = np.mean(list(labels.values()))
    for f in splits["folds"]:  # stratified: each held-out fold keeps the class balance
        assert abs(np.mean([labels[i] for i in f["test"]]) - rate) < 0.02


def test_binary_scores_of_the_positive_class_differ_from_macro_averages():
    import numpy as np

    from medrun.evaluation.classification import classification_scores

    y = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3], [0.3, 0.7], [0.6, 0.4]])
    s, cm = classification_scores(y, probs, ["benign", "malignant"], multilabel=False)
    assert cm == [[3, 1], [1, 1]]
    assert s["sensitivity_positive"] == pytest.approx(1 / 2) and s["specificity_positive"] == pytest.approx(3 / 4)
    assert s["f1_positive"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert s["auc_positive"] == pytest.approx(s["auc_malignant"])
    assert s["brier_positive"] == pytest.approx(np.mean((probs[:, 1] - y) ** 2))  # the positive class's Brier score
    # the macro averages of sensitivity and specificity coincide for two classes, so they cannot be the paper's
    assert s["sensitivity_macro"] == pytest.approx(s["specificity_macro"]) == pytest.approx((1 / 2 + 3 / 4) / 2)
    three, _ = classification_scores(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"], multilabel=False)
    assert not any(k.endswith("_positive") for k in three)


def test_a_ratio_a_set_leaves_undefined_is_left_out_of_the_scores_and_their_macro_average():
    from sklearn.metrics import precision_score, recall_score

    from medrun.evaluation.classification import classification_scores

    # class c is absent from the truth and never predicted; class b is present but never predicted
    y = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    s, _ = classification_scores(y, probs, ["a", "b", "c"], multilabel=False)
    assert "sensitivity_c" not in s and "precision_c" not in s and "f1_c" not in s and "auc_c" not in s
    assert "precision_b" not in s and s["f1_b"] == 0 and s["sensitivity_b"] == 0
    assert s["specificity_c"] == 1  # c has negatives, and none was called c
    assert s["sensitivity_macro"] == pytest.approx(recall_score(y, probs.argmax(1), labels=[0, 1], average="macro"))
    assert s["precision_macro"] == pytest.approx(precision_score(y, probs.argmax(1), labels=[0], average="macro"))
    assert s["specificity_macro"] == pytest.approx(np.mean([s["specificity_a"], s["specificity_b"], 1.0]))


def test_data_positive_names_the_class_scores_threshold_and_focal_loss_are_about(shared_data):
    from omegaconf import OmegaConf

    from medrun.evaluation.classification import classification_scores
    from medrun.config_values import positive_index
    from medrun.evaluation.decision import Decision
    from medrun.tasks.classification_losses import build_classification_loss

    y = np.array([0, 0, 0, 0, 1, 1])  # MedMNIST's order: malignant is label 0
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3], [0.3, 0.7], [0.6, 0.4]])
    classes = ["malignant", "normal_or_benign"]
    first = Decision(positive=0)
    s, _ = classification_scores(y, probs, classes, False, first)
    assert s["sensitivity_positive"] == s["sensitivity_malignant"] == pytest.approx(3 / 4)
    assert s["specificity_positive"] == s["specificity_malignant"] == pytest.approx(1 / 2)
    assert s["f1_positive"] == s["f1_malignant"] != classification_scores(y, probs, classes, False)[0]["f1_positive"]
    # a threshold applies to the positive class's probability: malignant where p(malignant) >= 0.75
    assert first.but(threshold=0.75).labels(probs, False).tolist() == [0, 0, 1, 1, 1, 1]
    assert Decision(threshold=0.75).labels(probs, False).tolist() == [0, 0, 0, 0, 0, 0]
    data = OmegaConf.create({"classes": classes, "positive": "malignant", "mode": "multiclass"})
    assert positive_index(data) == 0 and positive_index(OmegaConf.create({"classes": classes})) == 1
    with pytest.raises(MedrunError, match="data.positive='benign' is not a class; valid: malignant, normal_or_benign"):
        positive_index(OmegaConf.merge(data, {"positive": "benign"}))
    with pytest.raises(MedrunError, match="data.positive='a' applies to two-class single-label data"):
        positive_index(OmegaConf.create({"classes": ["a", "b", "c"], "positive": "a"}))
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    from medrun.evaluation.classification import draw_per_class

    _, ax = plt.subplots()
    draw_per_class(RocCurveDisplay, y, probs, classes, False, ax, positive=0)  # the ROC curve is malignant's
    assert [line.get_label().split(" (")[0] for line in ax.lines] == ["malignant"]
    plt.close("all")
    focal = build_classification_loss({"name": "focal", "alpha": 0.25, "gamma": 2.0}, False, None, classes, positive=0)
    assert focal.positive == 0  # alpha weighs the data's positive class unless task.loss.positive names another
    # the BreastMNIST experiments state malignant as their positive class, and a run's decision carries it
    cfg = compose("experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist")
    assert Decision.of_run(cfg).positive == 0


def test_focal_loss_weights_each_class_as_the_text_and_the_reference_code_do():
    import math

    import torch

    from medrun.tasks.classification_losses import build_classification_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # sample 0: class 0 true; sample 1: class 1 true
    target = torch.tensor([0, 1])
    p0, p1 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))  # p_t of each sample
    fl = lambda p, a: -a * (1 - p) ** 2 * math.log(p)  # noqa: E731
    spec = {"name": "focal", "alpha": 0.25, "gamma": 2.0}
    # the text's alpha_t, positive class 1 (default of two): 0.75 for class 0, 0.25 for class 1
    got = build_classification_loss(spec, False)(logits, target)
    assert float(got) == pytest.approx((fl(p0, 0.75) + fl(p1, 0.25)) / 2, rel=1e-5)
    # positive given by name: here class 0 ("malignant") gets 0.25
    named = build_classification_loss({**spec, "positive": "malignant"}, False, class_names=["malignant", "benign"])
    assert float(named(logits, target)) == pytest.approx((fl(p0, 0.25) + fl(p1, 0.75)) / 2, rel=1e-5)
    # uniform: one alpha for every class (the previous behaviour, by name)
    uniform = build_classification_loss({**spec, "weighting": "uniform"}, False)
    assert float(uniform(logits, target)) == pytest.approx((fl(p0, 0.25) + fl(p1, 0.25)) / 2, rel=1e-5)
    # the reference notebook: each one-hot channel's binary focal term, averaged over channels, so with two
    # classes alpha and 1 - alpha add up: 0.5 (1 - p_t)^2 (-log p_t)
    ref = build_classification_loss({**spec, "weighting": "reference_code"}, False)
    assert float(ref(logits, target)) == pytest.approx((fl(p0, 0.5) + fl(p1, 0.5)) / 2, rel=1e-4)
    with pytest.raises(MedrunError, match="task.loss.positive='x' is not a class; valid: a, b"):
        build_classification_loss({**spec, "positive": "x"}, False, class_names=["a", "b"])


def test_aucmedi_configs_start_from_imagenet_on_a_stratified_70_10_20_split():
    cfg = compose("experiment=densenet121_folder", "data.root=/nowhere")
    assert cfg.model.pretrained == "tv_in1k" and cfg.cv.name == "holdout" and not cfg.cv.use_fixed_test
    assert (cfg.cv.test_fraction, cfg.cv.val_fraction, cfg.trainer.max_epochs) == (0.2, 0.125, 500)
    assert cfg.task.scheduler.name == "plateau" and cfg.callbacks.early_stopping.enabled
    from medrun.models import build_network

    with pytest.raises(MedrunError, match="the timm weights densenet121.tv_in1k are not in"):  # Keras's weights
        build_network(cfg.model, 3, 2)


def test_label_facts_reach_the_config_before_the_input_size_check(shared_data, monkeypatch):
    from medrun import crossval

    seen = []

    def stop(cfg):  # record what the size check sees, then end the run before any training
        seen.append((list(cfg.data.classes), cfg.data.mode))
        raise MedrunError("stopped after the size check")

    monkeypatch.setattr(crossval, "check_input_size", stop)
    cfg = compose("experiment=densenet121_retinamnist", f"data.root={shared_data}/medmnist", "data.classes=null")
    with pytest.raises(MedrunError, match="stopped after the size check"):
        medrun.train(cfg)
    assert seen == [(["0", "1", "2", "3", "4"], "multiclass")]  # the five grades, listed from the file


def test_val_auc_is_the_mean_over_the_labels_the_validation_part_defines():
    import torch
    from types import SimpleNamespace

    from medrun.config import to_plain
    from medrun.tasks.classification import ClassificationTask, auc_defined

    cfg = compose("experiment=densenet121_multilabel", "data.classes=[infection,large]", *FAST)
    task = ClassificationTask(to_plain(cfg))
    truth = torch.tensor([[1, 0], [1, 1], [1, 0], [1, 1]])  # every validation image has an infection
    probs = torch.tensor([[0.9, 0.2], [0.8, 0.7], [0.6, 0.4], [0.7, 0.3]])
    task.auc_defined = torch.as_tensor(auc_defined([SimpleNamespace(extra={"targets": t.tolist()}) for t in truth],
                                                   2, True))
    assert task.auc_defined.tolist() == [False, True]
    logged = {}
    task.log = lambda name, value, **kw: logged.update({name: float(value)})
    task.validation_scores(probs, truth)
    task.on_validation_epoch_end()
    assert logged["val/auc"] == pytest.approx(roc_auc_score(truth[:, 1], probs[:, 1]))


def test_a_val_auc_monitor_needs_a_validation_part_that_defines_it(shared_data):
    cfg = compose("experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct", *FAST,
                  "task.monitor.metric=val/auc", "task.monitor.mode=max")
    from medrun.data.build import build_splits
    from medrun.tasks.classification import ClassificationTask

    store = build_store(cfg, preload=False)
    splits = build_splits(cfg, store)
    label = {s.id: s.label for s in store.samples}
    single = [f["fold"] for f in splits["folds"] if len({label[i] for i in f["val"]}) < 2]
    assert single, "this split was meant to give a fold a one-class validation part"
    with pytest.raises(MedrunError, match=rf"fold {single[0]}'s validation part \(\d+ images\) holds images of 1 "
                                          r"class\(es\), so val/auc, the task.monitor.metric, is undefined"):
        ClassificationTask.check_splits(cfg, splits, store)
    ClassificationTask.check_splits(compose("experiment=resnext50_dicom_contrast", *FAST), splits, store)


def test_ordinal_grades_report_the_quadratic_weighted_kappa():
    from omegaconf import OmegaConf
    from sklearn.metrics import cohen_kappa_score

    from medrun.evaluation.classification import classification_scores
    from medrun.tasks.classification import ordinal

    y = np.array([0, 1, 2, 2, 3, 4, 4, 1])
    pred = np.array([0, 2, 2, 1, 3, 3, 4, 1])
    probs = np.eye(5)[pred] * 0.8 + 0.04
    s, _ = classification_scores(y, probs, [f"g{k}" for k in range(5)], False, ordinal=True)
    assert s["kappa_quadratic"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert "kappa_quadratic" not in classification_scores(y, probs, [f"g{k}" for k in range(5)], False)[0]
    one_grade = classification_scores(np.zeros(3, int), np.tile([0.9, 0.1], (3, 1)), ["a", "b"], False, ordinal=True)
    assert "kappa_quadratic" not in one_grade[0]  # one grade in truth and prediction: undefined, left out
    assert compose("experiment=densenet121_retinamnist").data.ordinal is True
    with pytest.raises(MedrunError, match="data.ordinal=true says the classes are grades in order; multi-label"):
        ordinal(OmegaConf.create({"data": {"ordinal": True, "mode": "multilabel"}}))


def test_the_multistep_schedule_and_repeated_holdout_on_medmnists_official_split(shared_data, tmp_path):
    """MedMNIST v2's protocol: the official split trained with seeds seed, seed+1; the learning rate x0.1 at each
    milestone epoch, as logged per epoch."""
    import csv

    run_dir, summary = medrun.train(medrun.compose("train", [
        "experiment=medmnist_v2_breastmnist", f"data.root={shared_data}/medmnist", "cv.repeats=2", "data.batch_size=16",
        "trainer.max_epochs=3", "task.scheduler.multistep.milestones=[1,2]", "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1", "callbacks.progress=none", "html_report=false", f"paths.output_dir={tmp_path}"]))
    splits = json.loads((run_dir / "splits.json").read_text())
    assert len(splits["folds"]) == 2 and splits["folds"][0]["train"] == splits["folds"][1]["train"]
    assert splits["folds"][0]["test"] == splits["fixed_test"] and len(splits["fixed_test"]) == 156  # the official test
    rows = list(csv.DictReader(open(run_dir / "fold_0" / "logs" / "metrics.csv")))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-5])
    assert len(summary["folds"]) == 2 and summary["folds"][0]["metrics"] != summary["folds"][1]["metrics"]  # two seeds
