"""The "One Case" cascade's pair of networks (Zidan, pneumothorax): a classifier for "the mask is not empty"
and a segmenter, run together so that TTA, fold ensembles and `Run.predict` treat them as one model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrun.models.layers import default_cam_layer, default_feature_layer


class CascadeNet(nn.Module):
    """forward(x) -> (N, 2, H, W): channel 0 the segmenter's logits, channel 1 the classifier's logit of
    "mask not empty" (log-odds of its 2-way softmax) broadcast over the map. The classifier sees `x` resized
    to `classifier_size` (the thesis' 224) while the segmenter sees it at the data's size (256)."""

    def __init__(self, classifier: nn.Module, segmenter: nn.Module, classifier_size=(224, 224)):
        super().__init__()
        self.classifier, self.segmenter = classifier, segmenter
        self.classifier_size = tuple(int(v) for v in classifier_size)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) logits: empty, not empty."""
        if tuple(x.shape[-2:]) != self.classifier_size:
            x = F.interpolate(x, size=self.classifier_size, mode="bilinear", align_corners=False, antialias=True)
        return self.classifier(x)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) foreground logits."""
        return self.segmenter(x)

    def cam_layer(self) -> str:
        """The segmenter's layer: the cascade explains its masks."""
        return "segmenter." + default_cam_layer(self.segmenter)

    def feature_layer(self) -> str:
        return "segmenter." + default_feature_layer(self.segmenter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.classify(x)
        seg = self.segment(x)
        odds = (c[:, 1] - c[:, 0])[:, None, None, None].expand_as(seg)
        return torch.cat([seg, odds.to(seg.dtype)], dim=1)
