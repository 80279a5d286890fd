"""Classification losses: cross-entropy / BCE, focal (MelaNet: alpha 0.25, gamma 2), soft-F1 (cascade)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from medrun.errors import MedrunError
from medrun.registry import Registry


FOCAL_WEIGHTINGS = ("alpha_t", "uniform", "reference_code")


class SoftmaxFocalLoss(nn.Module):
    """Categorical focal loss on softmax outputs (torchvision and smp only offer the sigmoid form).

    `weighting`:
    - alpha_t (Lin et al., MelaNet's text): -alpha_t (1 - p_t)^gamma log p_t, alpha_t = alpha for the positive
      class, 1 - alpha for the others;
    - uniform: every class weighted by alpha;
    - reference_code: MelaNet's notebook applied the binary focal loss to each channel of the one-hot target
      and averaged over channels: alpha (1 - p_c)^gamma log p_c for the true class, (1 - alpha) p_c^gamma log(1 - p_c)
      for the others. With two classes both terms equal (1 - p_t)^gamma log p_t, so alpha has no effect.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, weight: torch.Tensor | None = None,
                 weighting: str = "alpha_t", positive: int | None = 1):
        super().__init__()
        if weighting not in FOCAL_WEIGHTINGS:
            raise MedrunError(f"task.loss.weighting={weighting!r}; valid: {', '.join(FOCAL_WEIGHTINGS)}")
        if weighting == "alpha_t" and positive is None:
            raise MedrunError("task.loss.weighting=alpha_t needs a positive class (task.loss.positive=<class>); "
                              "with more than two classes use weighting=uniform")
        self.alpha, self.gamma, self.weighting, self.positive = alpha, gamma, weighting, positive
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        logp_all = F.log_softmax(logits.float(), dim=1)
        if self.weighting == "reference_code":
            p, y = logp_all.exp(), F.one_hot(target, logits.shape[1]).bool()
            log1mp = torch.log1p(-p.clamp(max=1 - 1e-7))
            terms = torch.where(y, self.alpha * (1 - p) ** self.gamma * logp_all,
                                (1 - self.alpha) * p ** self.gamma * log1mp)
            loss = -terms.mean(1)
        else:
            logp = logp_all.gather(1, target[:, None]).squeeze(1)
            alpha = torch.full_like(logp, self.alpha) if self.weighting == "uniform" else \
                torch.where(target == self.positive, self.alpha, 1 - self.alpha)
            loss = -alpha * (1 - logp.exp()) ** self.gamma * logp
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


def build_classification_loss(spec, multilabel: bool, class_weights: torch.Tensor | None = None,
                              class_names: list[str] | None = None, positive: int = 1) -> nn.Module:
    """`spec`: {name: cross_entropy|focal|soft_f1, **kwargs}. Class weights apply to cross-entropy (BCE's
    pos_weight when multi-label) and single-label focal; elsewhere they are refused, not ignored. Focal's
    `positive` names the class alpha weighs (default: the data's positive class, index `positive`, of two)."""
    spec = dict(spec)
    name = spec.pop("name")
    if name == "focal" and not multilabel:
        names = list(class_names or ["0", "1"])
        named = spec.pop("positive", None)
        if named is not None and str(named) not in names:
            raise MedrunError(f"task.loss.positive={named!r} is not a class; valid: {', '.join(names)}")
        spec["positive"] = names.index(str(named)) if named is not None else (positive if len(names) == 2 else None)
    elif name == "focal":
        spec.pop("positive", None)
        if spec.pop("weighting", "alpha_t") != "alpha_t":  # torchvision's sigmoid focal loss is alpha_t per label
            raise MedrunError("task.loss.weighting applies to single-label focal loss; multi-label uses alpha_t")
    if class_weights is not None and (name == "soft_f1" or (name == "focal" and multilabel)):
        raise MedrunError(f"task.class_weights=balanced does not apply to task.loss.name={name}"
                          f"{' (multi-label)' if multilabel else ''}; remove it, or use cross_entropy"
                          f"{'' if multilabel else ' or focal'}")
    try:
        return CLASSIFICATION_LOSSES.get(name)(multilabel, class_weights, **spec)
    except TypeError as e:  # a keyword the loss does not take
        raise MedrunError(f"task.loss (name={name}): {e}") from None


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
