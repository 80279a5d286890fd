"""Segmentation losses by name (smp's implementations), combinable as weighted sums."""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from omegaconf import OmegaConf
from torch import nn

from medrun.errors import MedrunError
from medrun.registry import Registry

SEGMENTATION_LOSSES: Registry = Registry("segmentation loss", "task.loss[].name")
# The Sharp U-Net paper's loss: binary / categorical cross-entropy.
SEGMENTATION_LOSSES.register("cross_entropy")(
    lambda mode, **kw: (smp.losses.SoftBCEWithLogitsLoss(**kw) if mode == "binary"
                        else smp.losses.SoftCrossEntropyLoss(**{"smooth_factor": 0.0, **kw})))
SEGMENTATION_LOSSES.register("dice")(lambda mode, **kw: smp.losses.DiceLoss(mode, from_logits=True, **kw))
SEGMENTATION_LOSSES.register("jaccard")(lambda mode, **kw: smp.losses.JaccardLoss(mode, from_logits=True, **kw))
SEGMENTATION_LOSSES.register("focal")(lambda mode, **kw: smp.losses.FocalLoss(mode, **kw))
SEGMENTATION_LOSSES.register("tversky")(lambda mode, **kw: smp.losses.TverskyLoss(mode, from_logits=True, **kw))


class WeightedSum(nn.Module):
    def __init__(self, terms: list[tuple[float, nn.Module]], binary: bool):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList(t for _, t in terms)
        self.binary = binary

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Binary losses take a float target shaped like the (N,1,H,W) logits; multi-class ones class indices.
        target = target.unsqueeze(1).float() if self.binary else target
        return sum(w * term(logits, target) for w, term in zip(self.weights, self.terms))


def build_loss(spec, binary: bool) -> WeightedSum:
    """`spec`: a list of {name, weight, **kwargs}, e.g. [{name: cross_entropy}, {name: dice, weight: 0.5}]."""
    mode = "binary" if binary else "multiclass"
    terms = []
    items = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    for i, item in enumerate(items):
        item = dict(item)
        name, weight = item.pop("name", None), float(item.pop("weight", 1.0))
        try:
            terms.append((weight, SEGMENTATION_LOSSES.get(name)(mode, **item)))
        except TypeError as e:  # a keyword the loss does not take
            raise MedrunError(f"task.loss[{i}] (name={name}): {e}") from None
    if not terms:
        raise MedrunError("task.loss is empty; give at least one loss, e.g. [{name: cross_entropy}]")
    return WeightedSum(terms, binary)
