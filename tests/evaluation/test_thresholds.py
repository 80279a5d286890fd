"""Threshold searches: the vectorised pixel search against brute force, the classifier's decision objectives."""
import numpy as np
import pytest
import torch

from medrun.evaluation.thresholds import search_decision_threshold, search_pixel_threshold


def brute_force_dice(probs, target, t):
    pred = probs >= t
    tp = (pred & target).flatten(1).sum(1).float()
    denom = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(tp)).mean().item()


def test_vectorised_pixel_search_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(20, 16, 16, generator=g) > 0.8
    target[:3] = False  # empty ground truth
    probs = (target.float() * 0.3 + torch.rand(20, 16, 16, generator=g) * 0.7)
    found = search_pixel_threshold(probs, target, bins=50)
    brute = {i / 50: brute_force_dice(probs, target, i / 50) for i in range(1, 50)}
    best = max(brute, key=brute.get)
    assert found["threshold"] == pytest.approx(best) and found["dice"] == pytest.approx(brute[best], abs=1e-6)
    # spurious small predictions on empty images: blanking them must be chosen and must help
    noisy = probs.clone()
    noisy[:3, :2, :2] = 0.99  # 4-pixel false positives on the three empty images
    plain = search_pixel_threshold(noisy, target, bins=50)
    with_area = search_pixel_threshold(noisy, target, bins=50, min_areas=(0, 5, 200))
    assert with_area["min_area"] == 5 and with_area["dice"] > plain["dice"]


def test_decision_threshold_objectives():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.45, 0.7, 0.9, 0.3, 0.6])
    f1 = search_decision_threshold(y, s, "f1")
    brute = max(((2 * ((s >= t) & (y == 1)).sum()) / ((s >= t).sum() + y.sum()), t) for t in s)
    assert f1["threshold"] == pytest.approx(brute[1])
    sens = search_decision_threshold(y, s, "sensitivity", 1.0)
    assert sens["sensitivity"] == 1.0 and sens["threshold"] == pytest.approx(0.4)
    youden = search_decision_threshold(y, s, "youden")
    assert youden["sensitivity"] - (1 - youden["specificity"]) >= 0.6
