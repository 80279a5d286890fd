"""Bootstrap confidence intervals of eval's last row: stratified by class, percentile bounds, undefined left out."""
import numpy as np
import pytest
from scipy.stats import bootstrap

from medrun.evaluation.classification import classification_scores
from medrun.evaluation.intervals import bootstrap_intervals, class_strata


def test_intervals_resample_within_each_class_and_match_scipys_percentile_bootstrap():
    rng = np.random.default_rng(3)
    y = np.array([0] * 30 + [1] * 10)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(len(y)), 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    counts = []

    def metrics_of(idx):
        counts.append(np.bincount(y[idx], minlength=2).tolist())
        return classification_scores(y[idx], probs[idx], ["a", "b"], False)[0]

    ci = bootstrap_intervals(metrics_of, class_strata(y, False), ["auc_macro", "accuracy", "nope"], resamples=200)
    assert set(ci) == {"auc_macro", "accuracy"}  # a metric no resample defines gets no interval
    assert all(c == [30, 10] for c in counts[1:])  # every resample keeps the class counts
    point = classification_scores(y, probs, ["a", "b"], False)[0]["auc_macro"]
    assert ci["auc_macro"][0] < point < ci["auc_macro"][1] < 1
    # the same draws as scipy's bootstrap of the AUC alone, over the two classes' index arrays
    alone = bootstrap((np.flatnonzero(y == 0), np.flatnonzero(y == 1)),
                      lambda a, b: metrics_of(np.concatenate([a, b]))["auc_macro"], paired=False, vectorized=False,
                      n_resamples=200, method="percentile", random_state=0).confidence_interval
    assert ci["auc_macro"] == pytest.approx([alone.low, alone.high])


def test_a_class_of_one_sample_is_resampled_with_the_others_and_multilabel_is_one_stratum():
    y = np.array([0, 0, 0, 1])
    assert [s.tolist() for s in class_strata(y, False)] == [[0, 1, 2], [3]]
    seen = []
    bootstrap_intervals(lambda idx: seen.append(np.bincount(y[idx], minlength=2)[1]) or {"x": 1.0},
                        class_strata(y, False), ["x"], resamples=50)
    assert len(set(seen)) > 1  # the single positive is drawn 0, 1, 2, ... times: one stratum
    assert [s.tolist() for s in class_strata(np.eye(3)[[0, 1, 1]], True)] == [[0, 1, 2]]
    assert bootstrap_intervals(lambda idx: {"x": 1.0}, [np.array([0])], ["x"]) == {}  # one sample: no spread
