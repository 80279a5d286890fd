"""Per-fold Lightning machinery built from config: trainer, callbacks, loggers."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import (BackboneFinetuning, EarlyStopping, LearningRateMonitor, ModelCheckpoint,
                                         RichProgressBar, TQDMProgressBar)
from pytorch_lightning.loggers import CSVLogger, Logger

from medrun.errors import MedrunError
from medrun.registry import Registry


class FoldProgressBar(RichProgressBar):
    """Rich progress bar that also shows which fold is training, and a loss logged per step and per epoch once,
    under its own name (the epoch means are for the loggers)."""

    def __init__(self, fold_label: str):
        super().__init__(leave=False)
        self.fold_label = fold_label

    def get_metrics(self, trainer, pl_module):
        shown = {k.removesuffix("_step"): v for k, v in super().get_metrics(trainer, pl_module).items()
                 if not k.endswith("_epoch")}
        return {"fold": self.fold_label, **shown}


class FrozenEncoderFinetuning(BackboneFinetuning):
    """Lightning's BackboneFinetuning; with train_bn=False the encoder's batch norm is frozen too until the unfreeze
    epoch (Lightning's own freezes the weights but leaves batch norm trainable, as fastai does)."""

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module, epoch, optimizer):
        super().finetune_function(pl_module, epoch, optimizer)
        # The group added at the unfreeze epoch lacks the keys a one-cycle schedule set on the others at its start
        # (OneCycleLR then fails with KeyError 'max_lr'): it follows the first group's cycle.
        first = optimizer.param_groups[0]
        for group in optimizer.param_groups[1:]:
            for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
                if key in first:
                    group.setdefault(key, first[key])


class NonFiniteLossError(RuntimeError):
    pass


class FiniteLossGuard(pl.Callback):
    """Stops the fold at the first NaN or infinite training loss, naming epoch and step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                "lower task.optimizer.lr, set trainer.gradient_clip_val, or use trainer.precision=32-true")


class RngState(pl.Callback):
    """Saves the python, numpy and torch RNG states in checkpoints (as plain values, so they load with
    weights_only=True) and restores them on resume: a resumed fold sees the same shuffles and augmentations."""

    def state_dict(self):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()  # dropout and augmentation on the GPU
        return state

    def load_state_dict(self, state):
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def is_distributed(cfg: DictConfig) -> bool:
    """Whether the trainer settings start several processes (DDP)."""
    return cfg.trainer.strategy not in ("auto", None, "single_device") and cfg.trainer.devices != 1


def build_callbacks(cfg: DictConfig, fold_dir: Path, fold_label: str) -> list[pl.Callback]:
    cb = cfg.callbacks
    out: list[pl.Callback] = [
        FiniteLossGuard(), RngState(),
        # best.ckpt holds weights only: it is what eval, predict and explain load, never what a resume continues
        # from, and an optimizer's state would double or triple its size
        ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="best", monitor=cb.checkpoint.monitor,
                        mode=cb.checkpoint.mode, auto_insert_metric_name=False, enable_version_counter=False,
                        save_weights_only=True),
        # last.ckpt from a checkpoint of its own, written every epoch: Lightning's save_last writes it only in an
        # epoch that improved the monitored metric, so a resume would restart from the last improvement
        ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
    ]
    if cb.early_stopping.get("enabled", True):
        out.append(EarlyStopping(monitor=cb.early_stopping.monitor, mode=cb.early_stopping.mode,
                                 patience=int(cb.early_stopping.patience), check_on_train_epoch_end=False))
    finetune = cb.get("backbone_finetuning") or {}
    if finetune.get("enabled"):
        # The encoder (batch norm too, unless train_bn) is frozen before training and joins the optimizer at that
        # epoch with the current lr.
        out.append(FrozenEncoderFinetuning(unfreeze_backbone_at_epoch=int(finetune.unfreeze_at_epoch),
                                           backbone_initial_ratio_lr=1.0, should_align=True,
                                           train_bn=bool(finetune.get("train_bn", False))))
    if cb.progress == "rich":
        out.append(FoldProgressBar(fold_label))
    elif cb.progress == "tqdm":
        out.append(TQDMProgressBar())
    elif cb.progress != "none":
        raise MedrunError(f"callbacks.progress={cb.progress!r}; valid: rich, tqdm, none")
    return out


# name -> (options, cfg, fold_dir, run_dir, fold, config, resume_id) -> a Lightning logger
LOGGERS: Registry = Registry("logger", "logger")


def chosen_loggers(cfg: DictConfig) -> dict[str, dict]:
    """The loggers a config picks, name -> options: `logger=[csv,mlflow]` composes {csv: {}, mlflow: {...}}; run
    configs saved before several loggers could be chosen hold {name: csv, ...}."""
    node = cfg.get("logger") or {}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if isinstance(plain.get("name"), str):
        name = plain.pop("name")
        return {} if name == "none" else {name: plain}
    return {name: options or {} for name, options in plain.items()}


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, keeping the rows of the epochs before a resume: its writer deletes an existing
    metrics.csv when it starts, so the file is put back and the writer appends to it."""

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        old = path.read_text() if path.is_file() else ""
        writer = super().experiment
        if writer is not None and old.strip():
            path.write_text(old)
            writer.metrics_keys = next(csv.reader([old.splitlines()[0]]))  # new columns rewrite the header
        return writer


@LOGGERS.register("csv")
def _csv_logger(options, cfg, fold_dir, run_dir, fold, config, resume_id):
    return ResumableCSVLogger(save_dir=fold_dir, name="logs", version="")


@LOGGERS.register("tensorboard")
def _tensorboard_logger(options, cfg, fold_dir, run_dir, fold, config, resume_id):
    from pytorch_lightning.loggers import TensorBoardLogger

    # one fixed folder per fold: a resumed fold writes a new event file beside the old ones, which TensorBoard
    # shows as one run
    logger = TensorBoardLogger(save_dir=str(fold_dir), name="tensorboard", version="", default_hp_metric=False)
    if resume_id is None:
        logger.log_hyperparams(without_paths(config))
    return logger


@LOGGERS.register("mlflow")
def _mlflow_logger(options, cfg, fold_dir, run_dir, fold, config, resume_id):
    from pytorch_lightning.loggers import MLFlowLogger

    local = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    uri = options.get("tracking_uri") or f"sqlite:///{local / 'mlflow.db'}"
    # MLflow tags every run with the user name and the command's full path: blanked, like W&B's metadata
    private = {"mlflow.user": "", "mlflow.source.name": "medrun", "mlflow.source.git.repoURL": ""}
    logger = MLFlowLogger(experiment_name=options.get("experiment") or str(cfg.name),
                          run_name=f"{run_dir.name}/fold_{fold}", tracking_uri=uri, run_id=resume_id,
                          tags={**private, "run_folder": run_dir.name, "fold": str(fold)},
                          artifact_location=None if options.get("tracking_uri") else (local / "mlartifacts").as_uri(),
                          log_model=False)
    if resume_id is None:
        logger.log_hyperparams(without_paths(config))
    return logger


@LOGGERS.register("wandb")
def _wandb_logger(options, cfg, fold_dir, run_dir, fold, config, resume_id):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    # No code, git or host metadata: runs may sit next to patient data.
    settings = wandb.Settings(save_code=False, disable_code=True, disable_git=True, x_disable_meta=True,
                              x_disable_machine_info=True, console="off", silent=True)
    return WandbLogger(project=options.get("project", "medrun"), entity=options.get("entity"),
                       group=f"{cfg.name}/{run_dir.name}", name=f"fold_{fold}", job_type="train",
                       save_dir=str(run_dir), mode=options.get("mode"), config=without_paths(config),
                       settings=settings, reinit="finish_previous", log_model=False,
                       id=resume_id, resume="allow" if resume_id else None)


def tracker_id(logger: Logger) -> str | None:
    """The id that lets a resumed fold continue the same tracker run (W&B, MLflow); None for file loggers."""
    name = type(logger).__name__
    if name == "WandbLogger":
        return logger.experiment.id
    if name == "MLFlowLogger":
        return logger.run_id
    return None


def build_loggers(cfg: DictConfig, fold_dir: Path, run_dir: Path, fold: int | str, config: dict,
                  resume_ids: dict | None = None) -> list[Logger]:
    """The fold's loggers (`logger=csv`, `logger=[csv,mlflow]`, ...); `resume_ids` (name -> id) continue a
    fold's earlier tracker runs."""
    resume_ids = resume_ids or {}
    return [LOGGERS.get(name)(options, cfg, fold_dir, run_dir, fold, config, resume_ids.get(name))
            for name, options in chosen_loggers(cfg).items()]


PATH_KEYS = {"root", "csv", "image_dir", "output_dir", "resume", "weights_path", "encoder_weights_path", "splits_file",
             "test_csv", "test_image_dir", "discriminator_weights_path", "baseline_run", "run_dir", "duplicate_pairs"}


def _cut(value: str) -> str:
    """A path as its last part; `key=path` (a recorded override) as key=.../last part; anything else unchanged."""
    key, sep, rest = value.partition("=")
    if sep and "/" not in key and key.rsplit(".", 1)[-1] in PATH_KEYS | {"data.root"} and rest:
        return f"{key}=.../{Path(rest).name}"
    if value.startswith(("/", "~", "./", "../")) or ":\\" in value or (sep and rest.startswith(("/", "~"))):
        return f"{key}=.../{Path(rest).name}" if sep else f".../{Path(value).name}"
    return value


def without_paths(config):
    """The config any logger receives, with file paths cut to their last part (also inside recorded overrides such
    as `data.root=/home/...`): folder names on a user's machine can name patients or sites, and trackers may sync
    them to a server."""
    if isinstance(config, dict):
        return {k: (f".../{Path(str(v)).name}" if k in PATH_KEYS and v else without_paths(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [without_paths(v) for v in config]
    if isinstance(config, str):
        return _cut(config)
    return config


def close_loggers(loggers: list[Logger]) -> None:
    """Always end the W&B run, even after an error, so the next fold gets its own run."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()


def build_trainer(cfg: DictConfig, fold_dir: Path, callbacks, loggers: list[Logger]) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        kwargs.setdefault("enable_progress_bar", cfg.callbacks.progress != "none")
        if cfg.data.get("augment_schedule"):  # the training loader's transforms change with the epoch
            kwargs.setdefault("reload_dataloaders_every_n_epochs", 1)
        if loggers:  # the learning rate beside the losses, for every tracker and the report's curves
            callbacks = [*callbacks, LearningRateMonitor(logging_interval="epoch")]
        return pl.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, default_root_dir=str(fold_dir),
                          enable_model_summary=False)
    except (TypeError, ValueError) as e:
        raise MedrunError(f"invalid trainer settings (trainer.*): {e}") from None
    except Exception as e:  # Lightning's MisconfigurationException, e.g. gpu asked on a CPU-only machine
        raise MedrunError(f"cannot build the Lightning Trainer from trainer.*: {e}") from None
