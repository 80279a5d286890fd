"""Post-processing searched on validation / out-of-fold predictions: the cascade's
classifier blanking ("One Case") and the SIIM-ACR winners' triplet rule. Both reuse the per-image pixel
counts of the threshold search, so the classifier's scores are used once per image, not per threshold."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import torch

from medrun.evaluation.metrics import dice_of_counts
from medrun.evaluation.thresholds import pixel_counts

SIIM_SIZE = 1024 * 1024  # the triplet's areas are published at the competition's 1024x1024


def _dice(tp: torch.Tensor, fp: torch.Tensor, n_fg: torch.Tensor, empty_score: float) -> torch.Tensor:
    """Dice from true and false positives and the truth's pixel count."""
    return dice_of_counts(tp, fp, n_fg - tp, empty_score)


def search_cascade(seg: torch.Tensor, cls: torch.Tensor, target: torch.Tensor, decisions=None, min_areas=(0,),
                   bins: int = 100, empty_score: float = 1.0) -> dict:
    """(decision threshold, pixel threshold, min area) maximising mean per-image Dice, where an image whose
    classifier probability `cls` (N,) is below the decision threshold gets an empty mask.

    seg: (N, H, W) foreground probabilities; target: (N, H, W) in {0, 1}. Every decision threshold is scored
    at once: with the images sorted by classifier score, the images a threshold keeps are a prefix, so a
    cumulative sum of (Dice kept - Dice blanked) gives every threshold's total in one pass.
    """
    decisions = np.round(np.arange(0.05, 1.0, 0.05), 2) if decisions is None else decisions
    tp, fp, n_fg = pixel_counts(seg, target, bins)
    tp, fp, n_fg = tp.double(), fp.double(), n_fg[:, None].double()
    blanked = _dice(torch.zeros_like(n_fg), torch.zeros_like(n_fg), n_fg, empty_score)  # (N, 1)
    areas = torch.tensor([float(a) for a in min_areas], dtype=torch.float64)
    kept = _dice(tp, fp, n_fg, empty_score)[None]  # (1, N, bins)
    kept = torch.where((tp + fp)[None] >= areas[:, None, None], kept, blanked[None])  # (A, N, bins)
    order = torch.argsort(cls.double(), descending=True, stable=True)
    gain = torch.cumsum((kept - blanked[None])[:, order], dim=1)  # (A, N, bins): gain of keeping the top-k images
    gain = torch.cat([torch.zeros_like(gain[:, :1]), gain], dim=1)
    n_kept = torch.stack([(cls.double() >= float(d)).sum() for d in decisions])  # (D,)
    mean = (blanked.sum() + gain[:, n_kept].permute(1, 0, 2)) / len(cls)  # (D, A, bins)
    mean = mean[..., 1:]  # threshold 0 would mark every pixel foreground
    d, a, i = np.unravel_index(int(mean.argmax()), tuple(mean.shape))
    return {"decision_threshold": float(decisions[d]), "threshold": (i + 1) / bins, "min_area": int(min_areas[a]),
            "dice": float(mean[d, a, i])}


def _drop_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    if not min_size or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_size)
    small = small[small > 0]
    return mask & ~np.isin(labels, small) if small.size else mask


def apply_triplet(seg: torch.Tensor, top: float, area: int, bottom: float, min_component: int) -> torch.Tensor:
    """The triplet rule: an image is empty when fewer than `area` pixels exceed `top`; otherwise its mask is
    the pixels above `bottom`, without connected components smaller than `min_component` pixels."""
    empty = (seg >= top).flatten(1).sum(1) < area
    low = (seg >= bottom).cpu().numpy()
    masks = np.stack([_drop_small_components(m, min_component) for m in low])
    out = torch.from_numpy(masks)
    out[empty.cpu()] = False
    return out


def scaled(areas, shape) -> list[int]:
    """Areas published at 1024x1024 scaled to masks of `shape` (H, W)."""
    return [int(round(a * shape[0] * shape[1] / SIIM_SIZE)) for a in areas]


def search_triplet(seg: torch.Tensor, target: torch.Tensor, tops=(0.6, 0.7, 0.75, 0.8, 0.9),
                   areas=(0, 500, 1000, 2000, 4000), bottoms=(0.3, 0.4, 0.5), min_components=(0, 100, 400),
                   empty_score: float = 1.0) -> dict:
    """The triplet maximising mean per-image Dice; `areas` and `min_components` count pixels at 1024x1024
    (the winners' choice was top 0.75, area 2000, bottom 0.3, min 100) and are scaled to the masks' size."""
    shape = tuple(seg.shape[-2:])
    target = target.bool()
    n_fg = target.flatten(1).sum(1).float()
    above_top = {t: (seg >= t).flatten(1).sum(1) for t in tops}
    best = None
    for bottom, min_c in itertools.product(bottoms, min_components):
        low = (seg >= bottom).cpu().numpy()
        masks = torch.from_numpy(np.stack([_drop_small_components(m, scaled([min_c], shape)[0]) for m in low]))
        tp = (masks & target).flatten(1).sum(1).float()
        fp = (masks & ~target).flatten(1).sum(1).float()
        for top, area in itertools.product(tops, areas):
            keep = (above_top[top] >= scaled([area], shape)[0]).float()
            dice = float(_dice(tp * keep, fp * keep, n_fg, empty_score).mean())
            if best is None or dice > best["dice"]:
                best = {"top": float(top), "area": int(area), "bottom": float(bottom), "min_component": int(min_c),
                        "dice": dice}
    return best
