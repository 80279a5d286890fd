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
