"""The post-processing decision: how probabilities become masks or labels, made in one place.

A `Decision` holds the thresholds, the minimum mask area, the cascade's classifier threshold and the TTA.
`Decision.of_run(cfg)` gives a run's defaults (task.threshold, task.thresholds for multi-label, task.decision_threshold);
eval searches one on validation / out-of-fold predictions and stores it (`stored()`, eval's postprocessing.json);
training's held-out scoring, eval, predict and export all apply it through `masks`, `mask` or `labels`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from medrun.config_values import positive_index


@dataclass(frozen=True)
class Decision:
    """threshold: segmentation, the pixel threshold on the foreground probability; binary classification, the
    threshold on the probability of class `positive` (an index of data.classes); multi-label, one per label;
    None: argmax (0.5 per label when multi-label).
    min_area: a binary mask with fewer pixels is blanked, counted at `size` (the model's input size) and scaled
    to other sizes by area. decision_threshold (cascade): an image whose classifier probability is below it gets
    an empty mask."""

    threshold: float | tuple[float, ...] | None = None
    min_area: int = 0
    size: tuple[int, int] | None = None
    decision_threshold: float | None = None
    tta: str = "none"
    positive: int = 1

    @classmethod
    def of_run(cls, cfg, tta: str = "none") -> Decision:
        """The decision a run's config states, before any search."""
        task, data = cfg.task, cfg.data
        if data.get("mode") == "multilabel":
            threshold = tuple(float(t) for t in task.thresholds) if task.get("thresholds") else None
        else:
            threshold = float(task.threshold) if task.get("threshold") is not None else None
        decision = task.get("decision_threshold")
        # masks only: a task with a pixel threshold counts min_area at the model's input size
        size = tuple(int(v) for v in data.image_size) if task.get("threshold") is not None else None
        return cls(threshold=threshold, size=size, decision_threshold=None if decision is None else float(decision),
                   tta=tta, positive=positive_index(data))

    @classmethod
    def read(cls, stored: dict, cfg) -> Decision:
        """A stored decision (eval's postprocessing.json) over the run's defaults; keys it lacks keep them."""
        base = cls.of_run(cfg)
        threshold = stored.get("threshold")
        if isinstance(threshold, list):
            threshold = tuple(float(t) for t in threshold)
        elif threshold is not None:
            threshold = float(threshold)
        size = stored.get("min_area_at_size")
        return replace(base, threshold=base.threshold if threshold is None else threshold,
                       min_area=int(stored.get("min_area") or 0), size=tuple(size) if size else base.size,
                       decision_threshold=(base.decision_threshold if stored.get("decision_threshold") is None
                                           else float(stored["decision_threshold"])),
                       tta=stored.get("tta") or "none")

    def but(self, **changes) -> Decision:
        """This decision with some fields changed (a searched threshold, an option given on the command line)."""
        return replace(self, **changes)

    def stored(self) -> dict:
        """The keys eval writes to postprocessing.json (and export to serving.json)."""
        out = {"tta": self.tta, "threshold": list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold}
        if self.decision_threshold is not None:
            out["decision_threshold"] = self.decision_threshold
        if self.size is not None:
            out.update(min_area=self.min_area, min_area_at_size=list(self.size))
        return out

    def masks(self, probs: torch.Tensor, classifier: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean masks (N, H, W) from foreground probabilities (N, H, W) at the model's size; `classifier` (N,)
        blanks the images below decision_threshold (the cascade)."""
        masks = probs >= (0.5 if self.threshold is None else self.threshold)
        if classifier is not None and self.decision_threshold is not None:
            masks[classifier < self.decision_threshold] = False
        if self.min_area:
            masks[masks.flatten(1).sum(1) < self.min_area] = False
        return masks

    def mask(self, probs: np.ndarray, classifier: float | None = None) -> np.ndarray:
        """One boolean mask from foreground probabilities (H, W) at any size: min_area counts as a fraction of
        the image, as it did at the model's size."""
        mask = probs >= (0.5 if self.threshold is None else self.threshold)
        blank = classifier is not None and self.decision_threshold is not None and classifier < self.decision_threshold
        if blank or mask.mean() < self.min_area_fraction():
            mask[:] = False
        return mask

    def min_area_fraction(self) -> float:
        """min_area as a fraction of the image (0 without a minimum)."""
        return self.min_area / (self.size[0] * self.size[1]) if self.min_area and self.size else 0.0

    def labels(self, probs: np.ndarray, multilabel: bool) -> np.ndarray:
        """Multi-label: (N, K) 0/1, each label at its threshold (0.5 unset). Binary with a threshold: the positive
        class where its probability reaches the threshold, else the other. Otherwise the argmax."""
        if multilabel:
            t = np.full(probs.shape[1], 0.5) if self.threshold is None else np.asarray(self.threshold, dtype=float)
            return (probs >= t).astype(int)
        if self.threshold is not None and probs.shape[1] == 2:
            return np.where(probs[:, self.positive] >= float(self.threshold), self.positive, 1 - self.positive)
        return probs.argmax(1)
