"""Classification losses: cross-entropy / BCE, focal (MelaNet: alpha 0.25, gamma 2), soft-F1 (cascade)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from medrun.errors import MedrunError
from medrun.registry import Registry


class SoftmaxFocalLoss(nn.Module):
    """Categorical focal loss on softmax outputs, -alpha (1 - p_t)^gamma log p_t, as in MelaNet's 2-unit
    softmax head (torchvision and smp only offer the sigmoid form)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -self.alpha * (1 - logp.exp()) ** self.gamma * logp
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


class SoftF1Loss(nn.Module):
    """1 - macro soft F1 on probabilities: differentiable F1 for imbalanced classes."""

    def __init__(self, multilabel: bool):
        super().__init__()
        self.multilabel = multilabel

    def forward(self, logits, target):
        if self.multilabel:
            p, y = torch.sigmoid(logits.float()), target.float()
        else:
            p, y = torch.softmax(logits.float(), 1), F.one_hot(target, logits.shape[1]).float()
        tp, fp, fn = (p * y).sum(0), (p * (1 - y)).sum(0), ((1 - p) * y).sum(0)
        return 1 - (2 * tp / (2 * tp + fp + fn + 1e-7)).mean()


class WeightedBCEWithLogits(nn.BCEWithLogitsLoss):
    """BCE with a per-label pos_weight exposed as `weight`, the name the single-label losses use."""

    @property
    def weight(self):
        return self.pos_weight


class SigmoidFocalLoss(nn.Module):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, target):
        return sigmoid_focal_loss(logits.float(), target.float(), self.alpha, self.gamma, reduction="mean")


def build_classification_loss(spec, multilabel: bool, class_weights: torch.Tensor | None = None) -> nn.Module:
    """`spec`: {name: cross_entropy|focal|soft_f1, **kwargs}. Class weights apply to cross-entropy (BCE's
    pos_weight when multi-label) and single-label focal; elsewhere they are refused, not ignored."""
    spec = dict(spec)
    name = spec.pop("name")
    if class_weights is not None and (name == "soft_f1" or (name == "focal" and multilabel)):
        raise MedrunError(f"task.class_weights=balanced does not apply to task.loss.name={name}"
                          f"{' (multi-label)' if multilabel else ''}; remove it, or use cross_entropy"
                          f"{'' if multilabel else ' or focal'}")
    return CLASSIFICATION_LOSSES.get(name)(multilabel, class_weights, **spec)


CLASSIFICATION_LOSSES: Registry = Registry("classification loss", "task.loss.name")


@CLASSIFICATION_LOSSES.register("cross_entropy")
def _cross_entropy(multilabel, class_weights, **kw):
    return WeightedBCEWithLogits(pos_weight=class_weights, **kw) if multilabel else nn.CrossEntropyLoss(
        weight=class_weights, **kw)


@CLASSIFICATION_LOSSES.register("focal")
def _focal(multilabel, class_weights, **kw):
    return SigmoidFocalLoss(**kw) if multilabel else SoftmaxFocalLoss(weight=class_weights, **kw)


@CLASSIFICATION_LOSSES.register("soft_f1")
def _soft_f1(multilabel, class_weights):
    return SoftF1Loss(multilabel)
