"""Per-fold Lightning machinery built from config: trainer, callbacks, logger."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger

from medrun.errors import MedrunError


class FoldProgressBar(RichProgressBar):
    """Rich progress bar that also shows which fold is training."""

    def __init__(self, fold_label: str):
        super().__init__(leave=False)
        self.fold_label = fold_label

    def get_metrics(self, trainer, pl_module):
        return {"fold": self.fold_label, **super().get_metrics(trainer, pl_module)}


def build_callbacks(cfg: DictConfig, fold_dir: Path, fold_label: str) -> list[pl.Callback]:
    cb = cfg.callbacks
    out: list[pl.Callback] = [
        ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="best", monitor=cb.checkpoint.monitor,
                        mode=cb.checkpoint.mode, save_last=True, auto_insert_metric_name=False,
                        enable_version_counter=False),
    ]
    if cb.early_stopping.get("enabled", True):
        out.append(EarlyStopping(monitor=cb.early_stopping.monitor, mode=cb.early_stopping.mode,
                                 patience=int(cb.early_stopping.patience)))
    if cb.progress == "rich":
        out.append(FoldProgressBar(fold_label))
    elif cb.progress == "tqdm":
        out.append(TQDMProgressBar())
    return out


def build_logger(cfg: DictConfig, fold_dir: Path, run_dir: Path, fold: int, config: dict) -> Logger | bool:
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        return CSVLogger(save_dir=fold_dir, name="logs", version="")
    if name == "wandb":
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        # No code, git or host metadata: runs may sit next to patient data.
        settings = wandb.Settings(save_code=False, disable_code=True, disable_git=True, x_disable_meta=True,
                                  x_disable_machine_info=True, console="off", silent=True)
        return WandbLogger(project=cfg.logger.project, entity=cfg.logger.get("entity"),
                           group=f"{cfg.name}/{run_dir.name}", name=f"fold_{fold}", job_type="train",
                           save_dir=str(run_dir), mode=cfg.logger.get("mode"), config=config,
                           settings=settings, reinit="finish_previous", log_model=False)
    raise MedrunError(f"unknown logger {name!r} (logger.name); valid: csv, wandb, none")


def close_logger(logger) -> None:
    """Always end the W&B run, even after an error, so the next fold gets its own run."""
    if logger and type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()


def build_trainer(cfg: DictConfig, fold_dir: Path, callbacks, logger) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        return pl.Trainer(**kwargs, callbacks=callbacks, logger=logger, default_root_dir=str(fold_dir),
                          enable_model_summary=False)
    except (TypeError, ValueError) as e:
        raise MedrunError(f"invalid trainer settings (trainer.*): {e}") from None
    except Exception as e:  # Lightning's MisconfigurationException, e.g. gpu asked on a CPU-only machine
        raise MedrunError(f"cannot build the Lightning Trainer from trainer.*: {e}") from None
