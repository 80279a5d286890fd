"""Segmentation metrics in one place, with one empty-mask policy.

Counts per image and class come from smp.metrics.get_stats. Per-image scores treat an image whose
ground truth and prediction are both empty as `empty_score` (1 by default); empty ground truth with
a non-empty prediction scores 0; dataset-level ratios with a zero denominator (no positives at all)
also take `empty_score`. Scores are never NaN. Multi-class means run over foreground classes.
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def confusion(probs: torch.Tensor, target: torch.Tensor, binary: bool, threshold: float = 0.5):
    """(tp, fp, fn, tn), each (N, C): C=1 (foreground) when binary, else one column per class.

    probs: (N, 1, H, W) foreground probabilities when binary, (N, C, H, W) class probabilities otherwise.
    target: (N, H, W) class indices.
    """
    if binary:
        return smp.metrics.get_stats(probs, target.unsqueeze(1).long(), mode="binary", threshold=threshold)
    return smp.metrics.get_stats(probs.argmax(1), target.long(), mode="multiclass", num_classes=probs.shape[1])


def scores(tp, fp, fn, tn, class_names: list[str], empty_score: float = 1.0) -> dict[str, float]:
    """Dice and Jaccard (per-image mean and dataset-level micro), precision, recall, specificity."""
    if tp.shape[1] > 1:  # multi-class: drop the background column
        tp, fp, fn, tn = (t[:, 1:] for t in (tp, fp, fn, tn))
    fg_names = class_names[1:]
    kw = dict(zero_division=empty_score)
    per_image_iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction=None, **kw)
    per_image_dice = smp.metrics.f1_score(tp, fp, fn, tn, reduction=None, **kw)
    out = {
        "dice": per_image_dice.mean(),
        "jaccard": per_image_iou.mean(),
        "dice_micro": smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro", **kw),
        "jaccard_micro": smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro", **kw),
        "precision": smp.metrics.precision(tp, fp, fn, tn, reduction="micro", **kw),
        "recall": smp.metrics.recall(tp, fp, fn, tn, reduction="micro", **kw),
        "specificity": smp.metrics.specificity(tp, fp, fn, tn, reduction="micro", **kw),
    }
    if len(fg_names) > 1:
        for k, name in enumerate(fg_names):
            out[f"dice_{name}"] = per_image_dice[:, k].mean()
            out[f"jaccard_{name}"] = per_image_iou[:, k].mean()
    # smp's "micro" reduction leaves 0/0 as NaN: apply the same empty policy there.
    return {k: float(torch.nan_to_num(v, nan=empty_score)) for k, v in out.items()}


def per_image(tp, fp, fn, tn, empty_score: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image Dice and Jaccard averaged over foreground classes, shape (N,)."""
    if tp.shape[1] > 1:
        tp, fp, fn, tn = (t[:, 1:] for t in (tp, fp, fn, tn))
    kw = dict(reduction=None, zero_division=empty_score)
    return {"dice": smp.metrics.f1_score(tp, fp, fn, tn, **kw).mean(1),
            "jaccard": smp.metrics.iou_score(tp, fp, fn, tn, **kw).mean(1)}


class SegmentationScores(Metric):
    """Accumulates per-image counts over an epoch (synchronised across DDP ranks) and scores them."""

    full_state_update = False

    def __init__(self, class_names: list[str], threshold: float = 0.5, empty_score: float = 1.0):
        super().__init__()
        self.class_names, self.threshold, self.empty_score = list(class_names), threshold, empty_score
        self.binary = len(self.class_names) == 2
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        for name, t in zip(("tp", "fp", "fn", "tn"), confusion(probs, target, self.binary, self.threshold)):
            getattr(self, name).append(t)

    def compute(self) -> dict[str, float]:
        counts = [dim_zero_cat(getattr(self, n)) for n in ("tp", "fp", "fn", "tn")]
        return scores(*counts, self.class_names, self.empty_score)
