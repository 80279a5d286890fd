"""The segmentation LightningModule: sigmoid (binary) or softmax (multi-class) masks."""
from __future__ import annotations

import torch

from medrun.evaluation.heldout import evaluate_segmentation
from medrun.evaluation.metrics import SegmentationScores
from medrun.tasks import TASKS
from medrun.tasks.base import ConfiguredTask
from medrun.tasks.losses import build_loss


@TASKS.register("segmentation")
class SegmentationTask(ConfiguredTask):
    spatial = True

    def __init__(self, config: dict):
        classes = list(config["data"]["classes"])
        self.class_names, self.binary = classes, len(classes) == 2
        super().__init__(config, 1 if self.binary else len(classes))
        self.loss = build_loss(self.cfg.task.loss, self.binary)
        self.val_scores = SegmentationScores(classes, float(self.cfg.task.threshold), float(self.cfg.task.empty_score),
                                             str(self.cfg.task.get("absent_classes", "ignore")))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)

    def validation_scores(self, probs, target):
        self.val_scores.update(probs, target)

    def on_validation_epoch_end(self):
        values = self.val_scores.compute()
        self.val_scores.reset()
        # Already synchronised by the metric; sync_dist only keeps Lightning from warning under DDP.
        self.log("val/jaccard", values.pop("jaccard"), prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=True)

    def evaluate_heldout(self, loader, sample_ids: list[str], out_dir, device, save_probabilities=True):
        """Metrics on `loader`; writes predictions/<id>.png (and .npy probabilities)."""
        metrics = evaluate_segmentation(self, loader, sample_ids, out_dir / "predictions", save_probabilities, device)
        return metrics, {}
