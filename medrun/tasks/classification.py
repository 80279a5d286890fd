"""The classification LightningModule: binary / multi-class (softmax) and multi-label (sigmoid)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from sklearn.utils.class_weight import compute_class_weight
from torchmetrics import AUROC

from medrun.evaluation.classification import classification_scores, save_plots
from medrun.models import build_network
from medrun.runs import write_json
from medrun.tasks import TASKS
from medrun.tasks.classification_losses import build_classification_loss
from medrun.tasks.optim import apply_performance_options, build_optimization


@TASKS.register("classification")
class ClassificationTask(pl.LightningModule):
    """`config` is the run's resolved config as a plain dict, so checkpoints load with weights_only=True."""

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": config})
        cfg = OmegaConf.create(config)
        self.cfg = cfg
        self.channels_last = bool((cfg.get("performance") or {}).get("channels_last"))
        self.class_names = [str(c) for c in cfg.data.classes]
        self.multilabel = cfg.data.mode == "multilabel"
        n = len(self.class_names)
        self.net = build_network(cfg.model, int(cfg.data.channels), n)
        self.loss = build_classification_loss(cfg.task.loss, self.multilabel)
        self.val_auc = AUROC(task="multilabel", num_labels=n) if self.multilabel else AUROC(task="multiclass", num_classes=n)
        self.thresholds = cfg.task.get("thresholds")

    def setup(self, stage: str) -> None:
        if self.cfg.task.get("class_weights") == "balanced" and not self.multilabel and stage == "fit":
            dm = self.trainer.datamodule
            labels = np.array([dm.store.samples[i].label for i in dm.store.indices(dm.split["train"])])
            present = np.unique(labels)
            w = np.ones(len(self.class_names), dtype=np.float32)
            w[present] = compute_class_weight("balanced", classes=present, y=labels)
            self.loss = build_classification_loss(self.cfg.task.loss, False, torch.tensor(w))

    def configure_model(self):
        apply_performance_options(self)

    def forward(self, x):
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def probabilities(self, logits):
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["image"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["target"]), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["image"]))
        self.val_auc.update(self.probabilities(logits.float()), batch["target"].long())

    def on_validation_epoch_end(self):
        self.log("val/auc", self.val_auc.compute(), prog_bar=True, sync_dist=True)
        self.val_auc.reset()

    def configure_optimizers(self):
        return build_optimization(self, self.cfg.task.optimizer, self.cfg.task.get("scheduler"))

    @torch.inference_mode()
    def predict_loader(self, loader, device) -> tuple[np.ndarray, np.ndarray, list[int]]:
        self.to(device).eval()
        probs, targets, index = [], [], []
        for batch in loader:
            probs.append(self.probabilities(self(batch["image"].to(device)).float()).cpu().numpy())
            targets.append(batch["target"].numpy())
            index += batch["index"].tolist()
        return np.concatenate(probs), np.concatenate(targets), index

    def evaluate_heldout(self, loader, sample_ids: list[str], out_dir: Path, device, save_probabilities=True):
        """Metrics on `loader`; writes predictions.csv (id, truth, probabilities, prediction) and plots."""
        probs, targets, index = self.predict_loader(loader, device)
        write_predictions(out_dir / "predictions.csv", [sample_ids[i] for i in index], targets, probs,
                          self.class_names, self.multilabel, self.thresholds)
        metrics, cm = classification_scores(targets, probs, self.class_names, self.multilabel, self.thresholds)
        save_plots(targets, probs, self.class_names, self.multilabel, out_dir, thresholds=self.thresholds)
        return metrics, ({"confusion_matrix": cm} if cm else {})

    @classmethod
    def finish_run(cls, cfg, run_dir: Path, splits: dict) -> dict:
        """Pooled out-of-fold metrics and plots, when every sample was held out exactly once (k-fold)."""
        if splits["protocol"] != "kfold":
            return {}
        classes, multilabel = [str(c) for c in cfg.data.classes], cfg.data.mode == "multilabel"
        targets, probs = read_predictions([run_dir / f"fold_{f['fold']}" / "predictions.csv" for f in splits["folds"]],
                                          classes, multilabel)
        metrics, cm = classification_scores(targets, probs, classes, multilabel, cfg.task.get("thresholds"))
        save_plots(targets, probs, classes, multilabel, run_dir, prefix="oof_", thresholds=cfg.task.get("thresholds"))
        write_json(run_dir / "oof_metrics.json", {"metrics": metrics, "confusion_matrix": cm})
        return {"pooled_out_of_fold": metrics}


def write_predictions(path: Path, ids, targets, probs, classes, multilabel, thresholds=None) -> None:
    from medrun.evaluation.classification import predict_labels

    pred = predict_labels(probs, multilabel, thresholds)
    truth_cols = [f"true_{c}" for c in classes] if multilabel else ["true"]
    pred_cols = [f"pred_{c}" for c in classes] if multilabel else ["pred"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *truth_cols, *(f"prob_{c}" for c in classes), *pred_cols])
        for i, sid in enumerate(ids):
            truth = [int(v) for v in targets[i]] if multilabel else [int(targets[i])]
            labels = [int(v) for v in pred[i]] if multilabel else [int(pred[i])]
            w.writerow([sid, *truth, *(f"{p:.6f}" for p in probs[i]), *labels])


def read_predictions(paths: list[Path], classes: list[str], multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for p in paths for r in csv.DictReader(open(p))]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    if multilabel:
        targets = np.array([[int(r[f"true_{c}"]) for c in classes] for r in rows])
    else:
        targets = np.array([int(r["true"]) for r in rows])
    return targets, probs
