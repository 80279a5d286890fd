"""Classification losses: cross-entropy / BCE, focal (MelaNet: alpha 0.25, gamma 2), soft-F1 (cascade)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from medrun.errors import MedrunError


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


class SigmoidFocalLoss(nn.Module):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, target):
        return sigmoid_focal_loss(logits.float(), target.float(), self.alpha, self.gamma, reduction="mean")


def build_classification_loss(spec, multilabel: bool, class_weights: torch.Tensor | None = None) -> nn.Module:
    """`spec`: {name: cross_entropy|focal|soft_f1, **kwargs}; class weights apply to cross_entropy and focal."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "cross_entropy":
        if multilabel:
            return nn.BCEWithLogitsLoss(pos_weight=class_weights, **spec)
        return nn.CrossEntropyLoss(weight=class_weights, **spec)
    if name == "focal":
        return SigmoidFocalLoss(**spec) if multilabel else SoftmaxFocalLoss(weight=class_weights, **spec)
    if name == "soft_f1":
        return SoftF1Loss(multilabel)
    raise MedrunError(f"unknown classification loss {name!r} (task.loss.name); valid: cross_entropy, focal, soft_f1")
