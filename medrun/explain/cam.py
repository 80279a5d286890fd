"""Grad-CAM family heatmaps with pytorch-grad-cam, for classifiers (target: a class) and segmenters (target:
the predicted foreground region), and their faithfulness measured with the library's metrics."""
from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import (BinaryClassifierOutputTarget, ClassifierOutputSoftmaxTarget,
                                                  SemanticSegmentationTarget)
from torch import nn

from medrun.registry import Registry

METHODS: Registry = Registry("CAM method", "method")
for _name, _cls in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("scorecam", ScoreCAM),
                    ("eigencam", EigenCAM), ("layercam", LayerCAM)):
    METHODS.register(_name)(_cls)


class SegmentationMapTarget(SemanticSegmentationTarget):
    """The mean foreground probability inside `mask` (pytorch-grad-cam's target sums it, which makes ROAD's score
    changes grow with the region's area; a mean keeps them in probability units, as for classifiers): sigmoid of
    channel 0 for binary and cascade outputs, one minus the background softmax for multi-class outputs."""

    def __call__(self, model_output):
        if model_output.shape[0] > 2:
            fg = 1 - torch.softmax(model_output, 0)[0]
        else:
            fg = torch.sigmoid(model_output[0])
        mask = self.mask.to(model_output.device)
        return (fg * mask).sum() / mask.sum().clamp_min(1)


def targets_for(outputs: torch.Tensor, spatial: bool, target_class: int | None = None, predicted=None):
    """One pytorch-grad-cam target per image: the class (`target_class`, else the predicted one: `predicted`,
    the run's decision, or the argmax) for a classifier; the predicted foreground region for a segmenter (the
    whole image when it predicts none)."""
    if not spatial:
        if outputs.shape[1] == 1:  # one logit (a discriminator): what raises it
            return [BinaryClassifierOutputTarget(1) for _ in outputs]
        if target_class is not None:
            classes = [target_class] * len(outputs)
        else:
            classes = [int(c) for c in (outputs.argmax(1) if predicted is None else predicted)]
        return [ClassifierOutputSoftmaxTarget(c) for c in classes]
    out = []
    for o in outputs:
        fg = (torch.sigmoid(o[0]) >= 0.5).float() if o.shape[0] <= 2 else (o.argmax(0) > 0).float()
        out.append(SegmentationMapTarget(0, (fg if fg.any() else torch.ones_like(fg)).cpu().numpy()))
    return out


def compute_cams(net: nn.Module, layer: nn.Module, method: str, images: torch.Tensor, targets) -> np.ndarray:
    """(N, H, W) heatmaps in [0, 1] at the input's size."""
    with METHODS.get(method)(model=net, target_layers=[layer]) as cam:
        return cam(input_tensor=images, targets=targets)


def faithfulness(net: nn.Module, images: torch.Tensor, cams: np.ndarray, targets,
                 percentiles=(20, 40, 60, 80)) -> dict[str, float]:
    """pytorch-grad-cam's measures, means over images: the target score's change when the most relevant
    pixels are removed (ROAD MoRF: lower is more faithful), when the least relevant are removed (ROAD LeRF:
    higher is better), their gap (LeRF - MoRF), and when the image is multiplied by the CAM."""
    morf = ROADMostRelevantFirstAverage(list(percentiles))(images, cams, targets, net)
    lerf = ROADLeastRelevantFirstAverage(list(percentiles))(images, cams, targets, net)
    mult = CamMultImageConfidenceChange()(images, cams, targets, net)
    return {"road_morf": float(np.mean(morf)), "road_lerf": float(np.mean(lerf)),
            "road_gap": float(np.mean(lerf) - np.mean(morf)), "cam_mult_change": float(np.mean(mult))}


def mass_inside(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Energy-based pointing game per image: the share of CAM mass inside the ground-truth mask; NaN for an
    all-zero CAM, which has no mass to place (the caller leaves those images out, as it does empty masks)."""
    total = cams.reshape(len(cams), -1).sum(1)
    inside = (cams * (masks > 0)).reshape(len(cams), -1).sum(1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
