"""Corizzo et al.'s adversarial setup as a task: the generator learns one class only (`task.train_class`),
the discriminator tells its real images from generated ones; the discriminator's score then separates the
trained class from the others (held-out AUC), and `medrun explain` clusters the generator's bottleneck."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torchmetrics import AUROC

from medrun.errors import MedrunError
from medrun.evaluation.classification import balanced_subset_scores
from medrun.tasks.classification import auc_defined, part_samples
from medrun.tasks.base import TASKS, ConfiguredTask
from medrun.tasks.optim import build_optimization, manual_step


@TASKS.register("adversarial")
class AdversarialTask(ConfiguredTask):
    def __init__(self, config: dict):
        self.class_names = [str(c) for c in config["data"]["classes"]]
        train_class = str(config["task"]["train_class"])
        if train_class not in self.class_names:
            raise MedrunError(f"task.train_class={train_class!r}; valid: {', '.join(self.class_names)}")
        self.train_index = self.class_names.index(train_class)
        super().__init__(config, 1)
        self.automatic_optimization = False  # generator and discriminator, one optimiser each
        self.val_auc = AUROC(task="binary")

    @classmethod
    def check_splits(cls, cfg, splits: dict, store) -> None:
        """A val/auc monitor (the trained class against the others) needs both in every fold's validation part."""
        classes = [str(c) for c in cfg.data.classes]
        trained = classes.index(str(cfg.task.train_class))
        if cfg.task.monitor.metric == "val/auc":
            for fold in splits["folds"]:
                if not auc_defined(part_samples(store, fold["val"]), len(classes), False)[trained]:
                    raise MedrunError(
                        f"fold {fold['fold']}'s validation part ({len(fold['val'])} images) lacks either "
                        f"{classes[trained]} (task.train_class) or the other classes, so val/auc, the "
                        "task.monitor.metric, is undefined there: give the validation part more images "
                        "(cv.val_fraction)")

    @classmethod
    def trivial_rows(cls, cfg, store, fold: dict) -> dict[str, dict[str, float]]:
        """A discriminator that calls every test image the trained class, and one that calls none, scored as the
        method is (a constant score: AUC 0.5; the same balanced draws)."""
        classes = [str(c) for c in cfg.data.classes]
        labels = np.array([int(np.asarray(store.get(i)[1])) for i in store.indices(fold["test"])])
        is_trained = (labels == classes.index(str(cfg.task.train_class))).astype(int)
        if not 0 < is_trained.sum() < len(is_trained):
            return {}
        balanced = cfg.task.get("balanced_test") or {}
        rows = {}
        for name, value in (("all the trained class", 1), ("none the trained class", 0)):
            pred = np.full(len(is_trained), value)
            rows[name] = {"discriminator_mean_score": float(value), "auc": 0.5,
                          **balanced_subset_scores(is_trained, pred, int(balanced.get("per_class", 50)),
                                                   int(balanced.get("repeats", 3)), int(cfg.seed))}
        return rows

    def probabilities(self, logits):
        """(N, 1): the discriminator's probability that an image is a real one of the trained class."""
        return torch.sigmoid(logits)

    def configure_optimizers(self):
        opt = self.cfg.task.optimizer
        return [build_optimization(self.net.generator, opt, None), build_optimization(self.net.discriminator, opt, None)]

    def training_step(self, batch, batch_idx):
        real = batch["image"][batch["target"] == self.train_index]  # the generator learns one class only
        if len(real) == 0:
            return None
        opt_g, opt_d = self.optimizers()
        ones, zeros = torch.ones(len(real), 1, device=real.device), torch.zeros(len(real), 1, device=real.device)
        fake = self.net.generate(real)
        with self.toggled_optimizer(opt_d):
            loss_d = manual_step(self, opt_d, F.binary_cross_entropy_with_logits(self.net(real), ones)
                                 + F.binary_cross_entropy_with_logits(self.net(fake.detach()), zeros))
        with self.toggled_optimizer(opt_g):
            loss_g = F.binary_cross_entropy_with_logits(self.net(fake), ones)
            weight = float(self.cfg.task.get("reconstruction_weight") or 0)
            if weight:
                loss_g = loss_g + weight * F.l1_loss(fake, real)
            loss_g = manual_step(self, opt_g, loss_g)
        self.log_dict({"train/generator": loss_g, "train/discriminator": loss_d}, prog_bar=True, on_step=True,
                      on_epoch=True, batch_size=len(real))
        return loss_g + loss_d

    def validation_step(self, batch, batch_idx):
        score = self.probabilities(self(batch["image"]).float())[:, 0]
        self.val_auc.update(score, (batch["target"] == self.train_index).long())

    def on_validation_epoch_end(self):
        self.log("val/auc", self.val_auc.compute() if self.val_auc.update_count else 0.5, prog_bar=True,
                 sync_dist=True)
        self.val_auc.reset()

    def evaluate_heldout(self, datamodule, sample_ids: list[str], out_dir: Path, device, save_probabilities=True):
        """The discriminator's score on the fold's test part: AUC of telling the trained class from the others, and
        the paper's precision / recall / F-score (score >= 0.5 = the trained class) on balanced draws of the part."""
        probs, targets, index = self.collect_probabilities(datamodule.test_dataloader(), device)
        score, is_trained = probs[:, 0].numpy(), (targets == self.train_index).numpy()
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "trained_class", "discriminator_score"])
            w.writerows([sample_ids[i], int(t), f"{s:.6f}"] for i, t, s in zip(index, is_trained, score))
        metrics = {"discriminator_mean_score": float(score.mean())}
        if 0 < is_trained.sum() < len(is_trained):
            metrics["auc"] = float(roc_auc_score(is_trained, score))
            balanced = self.cfg.task.get("balanced_test") or {}
            metrics.update(balanced_subset_scores(is_trained.astype(int), (score >= 0.5).astype(int),
                                                  int(balanced.get("per_class", 50)), int(balanced.get("repeats", 3)),
                                                  int(self.cfg.seed)))
        return metrics, {}
