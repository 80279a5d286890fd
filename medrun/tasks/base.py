"""What every medrun LightningModule shares: config as plain hyperparameters, the network, the loss
step, validation loss, performance options and optimisation from config."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from medrun.errors import MedrunError
from medrun.evaluation.decision import Decision
from medrun.evaluation.metrics import compact
from medrun.evaluation.tta import tta_probabilities
from medrun.models import build_network
from medrun.registry import Registry
from medrun.tasks.optim import apply_performance_options, build_optimization


TASKS: Registry = Registry("task", "task.name")


class ConfiguredTask(pl.LightningModule):
    """`config` is the run's resolved config as a plain dict, so checkpoints load with weights_only=True.

    Subclasses set `self.loss` and implement `probabilities`, `validation_scores`, `evaluate_heldout(datamodule, ...)`
    and the class-level hooks below.
    """

    spatial = False  # whether a prediction is a map (segmentation) rather than one score vector per image
    class_probabilities = False  # whether each fold's predictions.csv holds prob_<class> columns (the report's curves)
    summary_tables: tuple[str, ...] = ()  # cv_summary keys holding post-processing tables (rows x columns) to compare

    def __init__(self, config: dict, out_channels: int):
        super().__init__()
        # kept in checkpoints, but not sent to loggers: they get the config without paths (training.without_paths)
        self.save_hyperparameters({"config": config}, logger=False)
        self.cfg = OmegaConf.create(config)
        self.channels_last = bool((self.cfg.get("performance") or {}).get("channels_last"))
        self.net = build_network(self.cfg.model, int(self.cfg.data.channels), out_channels)

    @property
    def backbone(self) -> torch.nn.Module:
        """The pretrained-style encoder that callbacks.backbone_finetuning freezes and later unfreezes."""
        encoder = getattr(self.net, "backbone", None)
        if encoder is None:
            raise MedrunError(f"callbacks.backbone_finetuning needs a model with an encoder; model.name="
                              f"{self.cfg.model.name} has none (use model=smp_unet)")
        return encoder

    def configure_model(self):
        apply_performance_options(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["image"]), batch["target"])
        # per step for the progress bar, and the epoch's mean (train/loss_epoch): every epoch has its training
        # loss in the loggers, however few steps it has
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["target"]), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["image"]))
        self.validation_scores(self.probabilities(logits.float()), batch["target"])

    def configure_optimizers(self):
        return build_optimization(self, self.cfg.task.optimizer, self.cfg.task.get("scheduler"))

    @torch.inference_mode()
    def iter_probabilities(self, loader, device, tta: str = "none"):
        """(probabilities on the CPU, batch) for each batch of `loader`, with test-time augmentation `tta`: the
        one inference loop of held-out scoring."""
        self.to(device).eval()
        for batch in loader:
            x = batch["image"].to(device)
            yield tta_probabilities(lambda v: self.probabilities(self(v).float()), x, tta, self.spatial).cpu(), batch

    def collect_probabilities(self, loader, device, tta: str = "none"):
        """(probabilities, targets, sample indices) of a whole loader."""
        probs, targets, index = [], [], []
        for p, batch in self.iter_probabilities(loader, device, tta):
            probs.append(p)
            targets.append(compact(batch["target"]))
            index += batch["index"].tolist()
        return torch.cat(probs), torch.cat(targets), index

    def serving_output(self, probs: torch.Tensor, decision: Decision) -> torch.Tensor:
        """What `medrun export`'s graph returns from the mean probabilities (a task may fold a decision in)."""
        return probs

    # Hooks a task defines; shared code calls these instead of asking which task it is.
    @classmethod
    def serving_meaning(cls, cfg) -> str:
        """What the exported model's output holds, for serving.json."""
        return "the task's probabilities, one row per image"

    @classmethod
    def output_channels(cls, n_classes: int) -> int:
        """Network outputs for `n_classes` classes."""
        return n_classes

    @classmethod
    def complete_config(cls, cfg) -> None:
        """Fill what the network needs but the config leaves to the data (e.g. class names)."""

    @classmethod
    def searchable(cls, cfg) -> bool:
        """Whether `medrun eval threshold=search` applies to runs of this task and config."""
        return False

    @classmethod
    def evaluate_predictions(cls, cfg, out_dir, store, search, evaluation, ids, folds, **options) -> dict:
        """`medrun eval`'s rows and files for this task: {"rows": {...}, "postprocessing": {...}, ...}."""
        raise NotImplementedError

    @classmethod
    def check_splits(cls, cfg, splits: dict, store) -> None:
        """Refuse, before any training, splits this run cannot use (MedrunError)."""

    @classmethod
    def finish_run(cls, cfg, run_dir, splits) -> dict:
        """Run-level outputs after the last fold (extra keys for cv_summary.json)."""
        return {}

    def training_split(self, store, fold: dict) -> dict:
        """The parts this task trains on in `fold`: the fold itself (the cascade can widen its classifier's)."""
        return fold

    @classmethod
    def leak_note(cls, cfg) -> str | None:
        """What a leaking option of this task's config lets into training, for the summary's note (else None)."""
        return None

    def validation_metrics(self, datamodule, device) -> dict[str, float] | None:
        """The held-out metrics computed on the fold's validation part (what a sweep may select on), or None
        when the task has none."""
        return None

    @staticmethod
    def test_targets(store, fold: dict) -> torch.Tensor:
        """The fold's test-part masks (N, H, W) as compact class indices, for the reference rows."""
        return compact(torch.stack([torch.as_tensor(store.get(i)[1]).long() for i in store.indices(fold["test"])]))

    @classmethod
    def trivial_rows(cls, cfg, store, fold: dict) -> dict[str, dict[str, float]]:
        """Reference rows for a fold's test part: what trivial predictors score with the same metric code."""
        return {}

    @classmethod
    def summary_markdown(cls, summary: dict) -> str:
        """Extra sections of summary.md from the cv_summary (e.g. a paper's table)."""
        return ""
