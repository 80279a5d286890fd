"""Threshold search on validation / out-of-fold predictions, vectorised with cumulative histograms.

Per image, the probabilities of foreground and background pixels are binned once; reverse cumulative
sums then give tp and fp at every threshold at once, instead of one pass over the data per threshold.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve, roc_curve

from medrun.errors import MedrunError
from medrun.evaluation.metrics import chunk_size, dice_of_counts, foreground


def pixel_counts(probs: torch.Tensor, target: torch.Tensor, bins: int = 100):
    """tp, fp (N, bins) at thresholds i/bins, and the foreground pixel count per image (N,).

    probs: (N, H, W) foreground probabilities; target: (N, H, W) in {0, 1}. One pass over the pixels, in
    cache-sized chunks of images on the CPU.
    """
    n = probs.shape[0]
    step = chunk_size(probs)
    # Two buffers reused by every chunk: fresh multi-MB tensors per chunk cost page faults on the CPU.
    scaled = probs.new_empty((min(step, n), probs[0].numel()))
    keys = torch.empty(scaled.shape, dtype=torch.int32, device=probs.device)
    hists = []
    for i in range(0, n, step):
        p, t = probs[i: i + step], target[i: i + step].to(probs.device)
        m = len(p)
        # One bincount over (image, bin, is-foreground): bin i holds probabilities in [i/bins, (i+1)/bins).
        key = keys[:m]
        key.copy_(torch.mul(p.reshape(m, -1), bins, out=scaled[:m]))  # truncated toward zero, as .to(int32)
        key.clamp_(0, bins - 1).mul_(2)
        key += foreground(t.reshape(m, -1)).view(torch.uint8)  # adding a bool tensor is 10x slower
        key += (torch.arange(m, dtype=torch.int32, device=key.device) * (2 * bins))[:, None]
        hists.append(torch.bincount(key.view(-1), minlength=m * bins * 2).reshape(m, bins, 2))
    # tp (fp) at threshold i/bins = foreground (background) pixels in bins >= i
    counts = torch.cat(hists).flip(1).cumsum(1).flip(1)
    return counts[..., 1], counts[..., 0], counts[:, 0, 1]


def search_pixel_threshold(probs: torch.Tensor, target: torch.Tensor, bins: int = 100,
                           min_areas=(0,), empty_score: float = 1.0) -> dict:
    """The (threshold, min_area) maximising the mean per-image Dice; a prediction smaller than
    min_area pixels is blanked (the pneumothorax paper's post-processing)."""
    tp, fp, n_fg = pixel_counts(probs, target, bins)
    n_fg = n_fg[:, None].float()
    tp, fp = tp.float(), fp.float()
    area = tp + fp
    best = None
    for a in min_areas:
        blank = area < a
        tpa, fpa = torch.where(blank, 0.0, tp), torch.where(blank, 0.0, fp)
        mean = dice_of_counts(tpa, fpa, n_fg - tpa, empty_score).mean(0)
        i = 1 + int(mean[1:].argmax())  # threshold 0 would mark every pixel foreground
        if best is None or mean[i] > best["dice"]:
            best = {"threshold": i / bins, "min_area": int(a), "dice": float(mean[i])}
    return best


def search_decision_threshold(y_true: np.ndarray, score: np.ndarray, objective: str = "f1",
                              target_sensitivity: float = 0.9) -> dict:
    """Binary classifier threshold on the positive-class score: max F1, max Youden's J, or the highest
    threshold that still reaches `target_sensitivity`."""
    if len(set(y_true.tolist())) < 2:
        raise MedrunError("threshold search needs both classes in the validation / out-of-fold predictions")
    fpr, tpr, thr = roc_curve(y_true, score, drop_intermediate=False)  # every score is a candidate cut
    thr = np.clip(thr, 0, 1)
    if objective == "youden":
        i = int(np.argmax(tpr - fpr))
    elif objective == "sensitivity":
        ok = np.flatnonzero(tpr >= target_sensitivity)
        i = int(ok[0])  # roc_curve orders thresholds high to low: the first reaching the target is the highest
    elif objective == "f1":
        precision, recall, pr_thr = precision_recall_curve(y_true, score)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        t = float(pr_thr[int(np.argmax(f1))])
        i = int(np.argmin(np.abs(thr - t)))  # the same cut on the ROC curve, for its sensitivity/specificity
    else:
        raise MedrunError(f"threshold.objective={objective!r}; valid: f1, youden, sensitivity")
    return {"threshold": float(thr[i]), "objective": objective, "sensitivity": float(tpr[i]),
            "specificity": float(1 - fpr[i])}
