"""The segmentation LightningModule: network + loss + validation scores + optimisation, all from config."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from medrun.evaluation.heldout import evaluate_segmentation
from medrun.evaluation.metrics import SegmentationScores
from medrun.models import build_network
from medrun.tasks import TASKS
from medrun.tasks.losses import build_loss
from medrun.tasks.optim import apply_performance_options, build_optimization


@TASKS.register("segmentation")
class SegmentationTask(pl.LightningModule):
    """`config` is the run's resolved config as a plain dict, so checkpoints load with weights_only=True."""

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": config})
        cfg = OmegaConf.create(config)
        self.cfg = cfg
        self.channels_last = bool((cfg.get("performance") or {}).get("channels_last"))
        self.class_names = list(cfg.data.classes)
        self.binary = len(self.class_names) == 2
        self.net = build_network(cfg.model, int(cfg.data.channels), 1 if self.binary else len(self.class_names))
        self.loss = build_loss(cfg.task.loss, self.binary)
        self.val_scores = SegmentationScores(self.class_names, float(cfg.task.threshold), float(cfg.task.empty_score))

    def configure_model(self):
        apply_performance_options(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["image"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["target"]), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["image"]))
        self.val_scores.update(self.probabilities(logits.float()), batch["target"])

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

    @classmethod
    def finish_run(cls, cfg, run_dir, splits) -> dict:
        return {}

    def configure_optimizers(self):
        return build_optimization(self, self.cfg.task.optimizer, self.cfg.task.get("scheduler"))
