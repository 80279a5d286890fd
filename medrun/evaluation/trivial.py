"""Reference rows: what trivial predictors score on the same held-out images with the same metric code, so a
table never shows a method without what predicting nothing (or the majority class) would have scored.

Segmentation: all-empty masks, and all-foreground masks (binary; multi-class: each foreground class everywhere).
Classification: scikit-learn's `DummyClassifier(strategy="prior")` fitted on the fold's training labels: it
predicts the training part's majority class and gives every image the same scores (the class priors), so its AUC
is 0.5; and, single-label, `all <class>` for each class: every image that class (its sensitivity 1, no false
negative of it). The rows are references, never methods: they live under their own key (`trivial`) in every summary.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.dummy import DummyClassifier

from medrun.evaluation.classification import classification_scores
from medrun.evaluation.decision import Decision
from medrun.evaluation.metrics import confusion, scores


def segmentation_predictors(n_classes: int) -> dict[str, int]:
    """name -> the class every pixel gets: all-empty, and all-foreground (binary) or all-<k> per foreground class."""
    if n_classes == 2:
        return {"all-empty": 0, "all-foreground": 1}
    return {"all-empty": 0, **{f"all-class-{k}": k for k in range(1, n_classes)}}


def constant_probabilities(target: torch.Tensor, n_classes: int, cls: int) -> torch.Tensor:
    """(N, C', H, W) probabilities giving every pixel class `cls`: one foreground map when binary, one-hot otherwise."""
    n, h, w = target.shape
    if n_classes == 2:
        return torch.full((n, 1, h, w), float(cls))
    probs = torch.zeros(n, n_classes, h, w)
    probs[:, cls] = 1
    return probs


class SegmentationBaselines:
    """Accumulates the confusion counts of every trivial predictor over batches of held-out targets."""

    def __init__(self, class_names: list[str], empty_score: float, absent: str):
        self.class_names, self.empty_score, self.absent = list(class_names), empty_score, absent
        self.predictors = segmentation_predictors(len(self.class_names))
        self.counts: dict[str, list] = {name: [] for name in self.predictors}

    def update(self, target: torch.Tensor) -> None:
        binary = len(self.class_names) == 2
        for name, cls in self.predictors.items():
            probs = constant_probabilities(target, len(self.class_names), cls)
            self.counts[name].append(confusion(probs, target, binary, 0.5))

    def compute(self) -> dict[str, dict[str, float]]:
        return {name: scores(*(torch.cat(c) for c in zip(*parts)), self.class_names, self.empty_score, self.absent)
                for name, parts in self.counts.items() if parts}


def segmentation_baselines(target: torch.Tensor, class_names: list[str], empty_score: float = 1.0,
                           absent: str = "ignore") -> dict[str, dict[str, float]]:
    """The trivial rows of held-out class-index masks (N, H, W)."""
    baselines = SegmentationBaselines(class_names, empty_score, absent)
    baselines.update(target)
    return baselines.compute()


def classification_baselines(train_labels: np.ndarray, test_labels: np.ndarray, class_names: list[str],
                             multilabel: bool, positive: int = 1, ordinal: bool = False) -> dict[str, dict[str, float]]:
    """The majority-class row: DummyClassifier(prior) fitted on the training part, scored on the test part."""
    return classification_baselines_by_fold({"train": train_labels}, ["train"] * len(test_labels), test_labels,
                                            class_names, multilabel, positive, ordinal)


def classification_baselines_by_fold(train_labels: dict[str, np.ndarray], owner: list[str], test_labels: np.ndarray,
                                     class_names: list[str], multilabel: bool, positive: int = 1,
                                     ordinal: bool = False) -> dict[str, dict[str, float]]:
    """The majority-class row of predictions made by several folds' models (out-of-fold): each prediction gets the
    DummyClassifier of the fold that made it (`owner`, a key of `train_labels`)."""
    probs = np.zeros((len(test_labels), len(class_names)))
    for fold, labels in train_labels.items():
        rows = [i for i, o in enumerate(owner) if o == fold]
        if rows:
            dummy = DummyClassifier(strategy="prior").fit(np.zeros((len(labels), 1)), labels)
            proba = dummy.predict_proba(np.zeros((len(rows), 1)))
            if multilabel:  # one (N, 2) array per label: P(label present), 0 for a label never seen in training
                probs[rows] = np.stack([p[:, list(c).index(1)] if 1 in c else np.zeros(len(rows))
                                        for p, c in zip(proba, dummy.classes_)], 1)
            else:  # classes absent from the training part keep probability 0
                probs[np.ix_(rows, dummy.classes_.astype(int))] = proba
    rows = {"majority class": classification_scores(test_labels, probs, class_names, multilabel,
                                                    Decision(positive=positive), ordinal)[0]}
    if not multilabel:  # each class for every image: the sensitivity 1 and no false negative a table may quote
        for k, name in enumerate(class_names):
            constant = np.zeros((len(test_labels), len(class_names)))
            constant[:, k] = 1
            rows[f"all {name}"] = classification_scores(test_labels, constant, class_names, False,
                                                        Decision(positive=positive), ordinal)[0]
    return rows


def best_trivial(trivial: dict[str, dict[str, float]], metric: str, higher_is_better: bool = True):
    """(name, value) of the trivial row scoring best on `metric`, or None when no row has it."""
    rows = [(name, values[metric]) for name, values in trivial.items() if metric in values]
    if not rows:
        return None
    return (max if higher_is_better else min)(rows, key=lambda r: r[1])
