"""pytorch-grad-cam targets: what a heatmap explains and what ROAD's score changes are measured in."""

import numpy as np
import pytest
import torch

from medrun.explain.cam import SegmentationMapTarget


def test_segmentation_target_is_the_mean_foreground_probability_in_the_region():
    logits = torch.zeros(1, 4, 4)  # sigmoid 0.5 everywhere
    logits[0, :2] = 2.0  # the top half more confident
    small, large = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)
    small[0, :2], large[:2] = 1, 1
    p = float(torch.sigmoid(torch.tensor(2.0)))
    # the same probability in a region twice the size scores the same: a mean, not pytorch-grad-cam's sum
    assert float(SegmentationMapTarget(0, small)(logits)) == pytest.approx(p, abs=1e-6)
    assert float(SegmentationMapTarget(0, large)(logits)) == pytest.approx(p, abs=1e-6)
    multi = torch.zeros(3, 4, 4)
    multi[0] = 5.0  # background almost certain everywhere
    assert float(SegmentationMapTarget(0, large)(multi)) < 0.02  # one minus the background probability
    assert float(SegmentationMapTarget(0, np.zeros((4, 4), np.float32))(logits)) == 0.0  # no region, no NaN
