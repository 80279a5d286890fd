"""Segmentation metrics in one place, with one empty-mask policy.

Counts per image and class come from smp.metrics.get_stats. Per-image scores treat an image whose
ground truth and prediction are both empty as `empty_score` (1 by default); empty ground truth with
a non-empty prediction scores 0; dataset-level Dice and IoU with a zero denominator (no foreground at all)
also take `empty_score`, while dataset-level precision, recall and specificity with nothing to count are left
out (undefined). Scores are never NaN. Multi-class means run over foreground classes.

Multi-class, `absent="ignore"` (default, as nnU-Net): a class absent from both the truth and the prediction
of an image is left out of that image's mean and of the class's mean over images, instead of scoring
`empty_score` and inflating both; `absent="empty_score"` keeps it. An image (or class) with nothing left
scores `empty_score`.

Beside medrun's own scores, `scores` names the papers' definitions after what they compute, so that a
reproduction compares like with like (README "Metric definitions"):
- `jaccard_with_background` / `dice_with_background`: per image, the mean over every class with the background
  counted (the Sharp U-Net text's "mean IoU ... of all classes"), then the mean over images;
- `jaccard_pooled_channels` / `dice_pooled_channels`: per image, one ratio over the pixels of every channel of the
  one-hot mask the network outputs (the Sharp U-Net reference notebooks; binary: the one foreground channel), then
  the mean over images;
- `dice_micro` / `jaccard_micro`: one ratio over the pixels of all images (One Case's pooled "Dice" and "IoU");
- `intersection_ratio_positive` (binary): the mean over images with a non-empty truth of |prediction and truth| /
  |truth|, medrun's reading of One Case's undefined "CM" column (Figure 5.6's "mean ratio of intersection").
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from medrun.errors import MedrunError


CHUNK = 16  # images per step on the CPU, so that a step's arrays stay in cache (4x faster than whole-array passes)


def chunk_size(x: torch.Tensor) -> int:
    """Images per step: CHUNK on the CPU, all at once on an accelerator."""
    return CHUNK if x.device.type == "cpu" else max(len(x), 1)


def compact(target: torch.Tensor) -> torch.Tensor:
    """Class-index masks (N, H, W) as uint8 when their classes fit, else unchanged: the evaluation's copy of
    every target then takes 8x less memory than int64, and counting reads 8x fewer bytes."""
    if target.dtype == torch.int64 and target.ndim >= 3 and target.numel():
        low, high = torch.aminmax(target)
        if low >= 0 and high < 256:
            return target.to(torch.uint8)
    return target


def foreground(target: torch.Tensor) -> torch.Tensor:
    """Non-zero classes as a bool mask. A cast, not `target > 0`: on the CPU the comparison kernel is
    several times slower (and 20x on uint8)."""
    return target.bool()


def count(mask: torch.Tensor) -> torch.Tensor:
    """True pixels per row of a (N, P) bool tensor, as int64. Summed as uint8 into int32 (a row holds far
    fewer than 2**31 pixels): 4x faster on the CPU than an int64 sum, which first copies the mask to int64."""
    return mask.view(torch.uint8).sum(1, dtype=torch.int32).long()


def confusion(probs: torch.Tensor, target: torch.Tensor, binary: bool, threshold: float = 0.5):
    """(tp, fp, fn, tn), each (N, C): C=1 (foreground) when binary, else one column per class.

    Vectorised on the predictions' device: a binary mask is `probs >= threshold`, a multi-class one the
    argmax; per-image counts come from pixel sums (binary) or one bincount of (image, predicted, true).
    probs: (N, 1, H, W) foreground probabilities when binary, (N, C, H, W) class probabilities otherwise.
    target: (N, H, W) class indices.
    """
    n, c = probs.shape[:2]
    target = target.to(probs.device)
    parts, step = [], chunk_size(probs)
    for i in range(0, n, step):
        p, t = probs[i: i + step], target[i: i + step]
        if binary:
            pred, truth = (p[:, 0] >= threshold).flatten(1), foreground(t).flatten(1)
            tp, n_pred, n_true = (count(m) for m in (pred & truth, pred, truth))
            fp, fn = n_pred - tp, n_true - tp
            parts.append(torch.stack([tp, fp, fn], 1)[:, None])
        else:
            m = len(p)
            key = p.argmax(1).flatten(1) * c + t.flatten(1).long()
            key += (torch.arange(m, device=key.device) * c * c)[:, None]
            cm = torch.bincount(key.view(-1), minlength=m * c * c).view(m, c, c)  # [image, predicted, true]
            tp = cm.diagonal(dim1=1, dim2=2)
            parts.append(torch.stack([tp, cm.sum(2) - tp, cm.sum(1) - tp], 2))
    counts = torch.cat(parts)  # (N, C, 3): tp, fp, fn
    tp, fp, fn = counts.unbind(2)
    tn = probs[0, 0].numel() - tp - fp - fn
    return tp, fp, fn, tn


ABSENT = ("ignore", "empty_score")
UNDEFINED_WHEN_EMPTY = ("precision", "recall", "specificity")


def dice_of_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_score: float) -> torch.Tensor:
    """Dice 2tp / (2tp + fp + fn) per entry, `empty_score` where truth and prediction are both empty: the policy
    smp's scores below follow with zero_division=empty_score, for the searches that count on histograms."""
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(denom, empty_score))


def _mean(values: torch.Tensor, keep: torch.Tensor, dim: int, empty_score: float) -> torch.Tensor:
    """Mean of `values` over `dim` where `keep`; empty_score where nothing is kept."""
    n = keep.sum(dim)
    total = torch.where(keep, values, torch.zeros_like(values)).sum(dim)
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, empty_score))


def _per_image_class(tp, fp, fn, tn, empty_score: float, absent: str):
    """Per-image, per-foreground-class Dice and IoU, and which entries count (N, C)."""
    if absent not in ABSENT:
        raise MedrunError(f"task.absent_classes={absent!r}; valid: {', '.join(ABSENT)}")
    kw = dict(reduction=None, zero_division=empty_score)
    dice = smp.metrics.f1_score(tp, fp, fn, tn, **kw).float()
    iou = smp.metrics.iou_score(tp, fp, fn, tn, **kw).float()
    keep = torch.ones_like(dice, dtype=torch.bool)
    if absent == "ignore" and tp.shape[1] > 1:
        keep = (tp + fp + fn) > 0
    return dice, iou, keep


def _with_background(tp, fp, fn, tn):
    """Counts (N, C) with the background as a class: binary counts get a background column (its tp is the
    foreground's tn, its fp the foreground's fn, its fn the foreground's fp); multi-class ones already have it."""
    if tp.shape[1] > 1:
        return tp, fp, fn, tn
    return (torch.cat([tn, tp], 1), torch.cat([fn, fp], 1), torch.cat([fp, fn], 1), torch.cat([tp, tn], 1))


def paper_definitions(tp, fp, fn, tn, empty_score: float = 1.0, absent: str = "ignore") -> dict[str, torch.Tensor]:
    """The papers' definitions that differ from medrun's (see the module docstring), from (N, C) counts."""
    out = {}
    all_tp, all_fp, all_fn, all_tn = _with_background(tp, fp, fn, tn)
    dice, iou, keep = _per_image_class(all_tp, all_fp, all_fn, all_tn, empty_score, absent)
    out["dice_with_background"] = _mean(dice, keep, 1, empty_score).mean()
    out["jaccard_with_background"] = _mean(iou, keep, 1, empty_score).mean()
    pooled = [t.sum(1, keepdim=True) for t in (tp, fp, fn, tn)]  # one ratio over every channel's pixels
    kw = dict(reduction=None, zero_division=empty_score)
    out["dice_pooled_channels"] = smp.metrics.f1_score(*pooled, **kw).float().mean()
    out["jaccard_pooled_channels"] = smp.metrics.iou_score(*pooled, **kw).float().mean()
    if tp.shape[1] == 1:
        positive = (tp + fn)[:, 0] > 0
        ratio = tp[:, 0].float() / (tp + fn)[:, 0].clamp(min=1)
        out["intersection_ratio_positive"] = (ratio[positive].mean() if positive.any()
                                              else torch.tensor(float(empty_score)))
    return out


def scores(tp, fp, fn, tn, class_names: list[str], empty_score: float = 1.0, absent: str = "ignore") -> dict[str, float]:
    """Dice and Jaccard (per-image mean and dataset-level micro), precision, recall, specificity, and the papers'
    definitions (`paper_definitions`)."""
    papers = paper_definitions(tp, fp, fn, tn, empty_score, absent)
    if tp.shape[1] > 1:  # multi-class: drop the background column
        tp, fp, fn, tn = (t[:, 1:] for t in (tp, fp, fn, tn))
    fg_names = class_names[1:]
    kw = dict(zero_division=empty_score)
    per_image_dice, per_image_iou, keep = _per_image_class(tp, fp, fn, tn, empty_score, absent)
    out = {
        "dice": _mean(per_image_dice, keep, 1, empty_score).mean(),
        "jaccard": _mean(per_image_iou, keep, 1, empty_score).mean(),
        "dice_micro": smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro", **kw),
        "jaccard_micro": smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro", **kw),
        "precision": smp.metrics.precision(tp, fp, fn, tn, reduction="micro", **kw),
        "recall": smp.metrics.recall(tp, fp, fn, tn, reduction="micro", **kw),
        "specificity": smp.metrics.specificity(tp, fp, fn, tn, reduction="micro", **kw),
    }
    if len(fg_names) > 1:
        dice_c, iou_c = _mean(per_image_dice, keep, 0, empty_score), _mean(per_image_iou, keep, 0, empty_score)
        for k, name in enumerate(fg_names):
            out[f"dice_{name}"] = dice_c[k]
            out[f"jaccard_{name}"] = iou_c[k]
    out.update(papers)
    # smp's "micro" reduction leaves 0/0 as NaN. Dice and IoU follow the empty policy there (nothing to find, and
    # nothing found); precision, recall and specificity with nothing to count are undefined and left out, as a
    # classifier's are (precision 1 for a model that marks no pixel would read as a perfect score).
    return {k: float(torch.nan_to_num(v, nan=empty_score)) for k, v in out.items()
            if not (k in UNDEFINED_WHEN_EMPTY and torch.isnan(v))}


def per_image(tp, fp, fn, tn, empty_score: float = 1.0, absent: str = "ignore") -> dict[str, torch.Tensor]:
    """Per-image Dice and Jaccard averaged over foreground classes, shape (N,)."""
    if tp.shape[1] > 1:
        tp, fp, fn, tn = (t[:, 1:] for t in (tp, fp, fn, tn))
    dice, iou, keep = _per_image_class(tp, fp, fn, tn, empty_score, absent)
    return {"dice": _mean(dice, keep, 1, empty_score), "jaccard": _mean(iou, keep, 1, empty_score)}


class SegmentationScores(Metric):
    """Accumulates per-image counts over an epoch (synchronised across DDP ranks) and scores them."""

    full_state_update = False

    def __init__(self, class_names: list[str], threshold: float = 0.5, empty_score: float = 1.0,
                 absent: str = "ignore"):
        super().__init__()
        self.class_names, self.threshold, self.empty_score = list(class_names), threshold, empty_score
        self.absent = absent
        self.binary = len(self.class_names) == 2
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        for name, t in zip(("tp", "fp", "fn", "tn"), confusion(probs, target, self.binary, self.threshold)):
            getattr(self, name).append(t)

    def compute(self) -> dict[str, float]:
        counts = [dim_zero_cat(getattr(self, n)) for n in ("tp", "fp", "fn", "tn")]
        return scores(*counts, self.class_names, self.empty_score, self.absent)
