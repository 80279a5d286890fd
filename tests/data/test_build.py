"""Label facts filled in from the data, and the decision settings checked against them before a run folder."""

import pytest

import medrun
from medrun.data.build import list_dataset
from medrun.errors import MedrunError


def medmnist(shared_data, experiment, override):
    return medrun.compose("train", [f"experiment={experiment}", f"data.root={shared_data}/medmnist", override])


def test_a_binary_threshold_on_five_classes_is_refused(shared_data):
    with pytest.raises(MedrunError, match=r"task.threshold=0.3 applies to two-class single-label data \(here 5 "
                                          r"multiclass classes: argmax decides\)"):
        list_dataset(medmnist(shared_data, "densenet121_retinamnist", "task.threshold=0.3"))
    binary = medmnist(shared_data, "densenet121_breastmnist", "task.threshold=0.3")
    list_dataset(binary)
    assert list(binary.data.classes) == ["malignant", "normal_or_benign"] and binary.task.threshold == 0.3


def test_per_label_thresholds_need_one_per_label_of_multilabel_data(shared_data):
    with pytest.raises(MedrunError, match=r"task.thresholds=\[0.3, 0.4\] needs one threshold per label of "
                                          r"multi-label data \(here 2 multiclass classes: task.threshold for two"):
        list_dataset(medmnist(shared_data, "densenet121_breastmnist", "task.thresholds=[0.3,0.4]"))


def test_test_images_identical_to_training_images_are_listed_and_noted(shared_data, tmp_path, caplog):
    import json

    from medrun.data.build import build_splits, build_store

    src = shared_data / "isbi2012/membrane/train/image"
    for cls, names in (("a", ("0", "1", "2", "3")), ("b", ("4", "5", "6", "copy_of_0"))):
        (tmp_path / cls).mkdir()
        for name in names:
            (tmp_path / cls / f"{name}.png").symlink_to(src / f"{name.removeprefix('copy_of_')}.png")
    folds = [{"fold": 0, "train": ["a_0", "a_1", "b_4", "b_5"], "val": ["a_2", "b_6"], "test": ["a_3", "b_copy_of_0"]},
             {"fold": 1, "train": ["a_3", "b_copy_of_0", "b_6", "a_2"], "val": ["a_1"], "test": ["a_0", "b_4", "b_5"]}]
    (tmp_path / "splits.json").write_text(json.dumps({"protocol": "kfold", "test_used_for_model_selection": False,
                                                      "folds": folds}))
    cfg = medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}", "data.image_size=[32,32]",
                                   f"cv.splits_file={tmp_path / 'splits.json'}"])
    with caplog.at_level("WARNING", logger="medrun"):
        splits = build_splits(cfg, build_store(cfg))
    # each copy is the other fold's training image; fold 1's b_4, b_5 have no copy
    assert splits["copies_across_parts"] == {"0": ["b_copy_of_0"], "1": ["a_0"]}
    assert ("test images identical to a training or validation image under another id (1 in fold 0, 1 in fold 1): "
            "their test scores are optimistic") in caplog.text


def test_a_split_by_class_that_is_impossible_says_why_in_one_line(shared_data):
    cfg = medrun.compose("train", ["experiment=densenet121_folder", "cv=holdout", "cv.test_fraction=0.01",
                                   f"data.root={shared_data}/isbi2012/membrane/train"])
    from medrun.data.build import build_store, build_splits

    with pytest.raises(MedrunError, match=r"cannot hold out 0.01 of \d+ samples by class: .*; raise cv.test_fraction"):
        build_splits(cfg, build_store(cfg, preload=False))
    # a validation part only steers early stopping: split without the classes, with a warning, rather than fail
    val = medrun.compose("train", ["experiment=densenet121_folder", "cv=holdout", "cv.val_fraction=0.01",
                                   f"data.root={shared_data}/isbi2012/membrane/train"])
    with pytest.warns(UserWarning, match="the validation split of 48 training samples is not stratified by class"):
        splits = build_splits(val, build_store(val, preload=False))
    assert len(splits["folds"][0]["val"]) == 1
    # kept with the splits, so the run's summary note and the reproduce report carry it, not only stderr
    assert len(splits["data_warnings"]) == 1
    assert splits["data_warnings"][0].startswith("the validation split of 48 training samples is not stratified")
