"""eval's notes on a searched decision threshold."""

import numpy as np

from medrun.evaluate import one_class_cut
from medrun.evaluation.thresholds import search_decision_threshold


def test_a_searched_cut_that_labels_everything_positive_is_pointed_out():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.8).astype(int)  # a majority positive class
    uninformative = rng.random(400)
    found = search_decision_threshold(y, uninformative, "f1")
    assert (found["sensitivity"], found["specificity"]) == (1.0, 0.0)  # F1's best cut: everything positive
    assert "objective=f1" in one_class_cut(found)[0] and "objective=youden" in one_class_cut(found)[0]
    informative = np.clip(y * 0.5 + rng.random(400) * 0.6, 0, 1)
    assert one_class_cut(search_decision_threshold(y, informative, "youden")) == []
