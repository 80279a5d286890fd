"""The public Python API; the CLI is a thin layer over these functions and the tests call them directly."""
from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from medrun.config import compose, to_plain
from medrun.crossval import run_folds
from medrun.data import build_dataset
from medrun.data.datamodule import FoldDataModule
from medrun.data.splits import load_splits, make_splits
from medrun.data.store import SampleStore
from medrun.evaluation.reports import markdown
from medrun.errors import MedrunError
from medrun.runs import RUN_DIR_ENV, create_run_dir, is_ddp_child, require_run_dir, write_json, write_text
from medrun.tasks import TASKS

__all__ = ["compose", "build_model", "build_datamodule", "build_store", "train", "resume"]


def fill_labels(cfg: DictConfig, dataset) -> None:
    """Classification: take class names and mode (multi-class / multi-label) from the data unless set."""
    if dataset.kind != "classification":
        return
    with open_dict(cfg):
        cfg.data.classes = list(cfg.data.get("classes") or dataset.classes)
        if cfg.data.get("mode") in (None, "auto"):
            cfg.data.mode = "multilabel" if dataset.multilabel else "multiclass"


def build_model(cfg: DictConfig):
    """The task's LightningModule (network, loss, metrics, optimisation) for a composed config."""
    if cfg.task.name == "classification":
        if not cfg.data.get("classes"):
            fill_labels(cfg, build_dataset(cfg.data))
        elif cfg.data.get("mode") in (None, "auto"):  # the network is the same; train() reads the mode from the data
            with open_dict(cfg):
                cfg.data.mode = "multilabel" if cfg.data.get("label_columns") else "multiclass"
    return TASKS.get(cfg.task.name)(to_plain(cfg))


def build_store(cfg: DictConfig, preload: bool = True) -> SampleStore:
    """List the dataset and (with `preload`) decode every sample, so bad files fail before training."""
    dataset = build_dataset(cfg.data)
    fill_labels(cfg, dataset)
    store = SampleStore(dataset, cfg.data.image_size, cache=bool(cfg.data.cache))
    if preload:
        if store.cached:
            store.preload()
        else:  # no cache: decode once to validate, keep nothing
            for s in store.samples:
                store.dataset.load(s)
    return store


def build_splits(cfg: DictConfig, store: SampleStore) -> dict:
    if cfg.cv.get("splits_file"):
        return load_splits(cfg.cv.splits_file, store.samples)
    return make_splits(store.samples, cfg.cv, int(cfg.seed))


def build_datamodule(cfg: DictConfig, fold: int = 0) -> FoldDataModule:
    """The datamodule of fold `fold` of the configured protocol (for exploration and tests)."""
    store = build_store(cfg, preload=False)
    return FoldDataModule(store, build_splits(cfg, store)["folds"][fold], cfg.data, int(cfg.seed))


def train(cfg: DictConfig) -> tuple[Path, dict | None]:
    """Run every fold of `cfg` into a new run folder; returns (run folder, cv_summary).

    With `resume=<run folder>` it continues that run instead (see `resume`).
    """
    if cfg.get("resume"):
        return resume(cfg.resume)
    store = build_store(cfg)
    config = to_plain(cfg)
    if is_ddp_child():
        run_dir = Path(os.environ[RUN_DIR_ENV])
        splits = json.loads((run_dir / "splits.json").read_text())
    else:
        splits = build_splits(cfg, store)
        run_dir = create_run_dir(cfg.paths.output_dir, cfg.name)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        write_text(run_dir / "overrides.txt", "".join(f"{o}\n" for o in cfg.get("overrides", [])))
        write_json(run_dir / "splits.json", splits)
    summary = run_folds(cfg, config, run_dir, store, splits)
    if summary is not None:
        write_json(run_dir / "cv_summary.json", summary)
        write_text(run_dir / "summary.md", markdown(summary))
    return run_dir, summary


def model_summary(cfg: DictConfig) -> str:
    """Layer table (Lightning's ModelSummary) with trainable and frozen parameter counts."""
    import torch
    from pytorch_lightning.utilities.model_summary import ModelSummary

    with open_dict(cfg):  # a summary needs the architecture, not the pretrained values
        for key in ("encoder_weights", "pretrained"):
            if cfg.model.get(key):
                cfg.model[key] = None
    model = build_model(cfg)
    h, w = (int(v) for v in cfg.data.image_size)
    model.example_input_array = torch.zeros(1, int(cfg.data.channels), h, w)
    summary = ModelSummary(model, max_depth=2)
    rows = [f"{'block':<24}{'trainable':>14}{'frozen':>10}"]
    for name, module in model.net.named_children():
        params = list(module.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        rows.append(f"{name:<24}{trainable:>14,}{sum(p.numel() for p in params) - trainable:>10,}")
    trainable = summary.trainable_parameters
    frozen = summary.total_parameters - trainable
    return (f"{summary}\n\n" + "\n".join(rows) + f"\n\n{cfg.name}: {trainable:,} trainable, {frozen:,} frozen, "
            f"{summary.total_parameters:,} total parameters")


def resume(run_dir: str | Path) -> tuple[Path, dict | None]:
    """Continue an interrupted run from its own folder: its saved config and splits, never the command line."""
    run_dir = require_run_dir(run_dir)
    if (run_dir / "cv_summary.json").is_file():
        raise MedrunError(f"{run_dir} is complete (cv_summary.json exists); nothing to resume")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    with open_dict(cfg):
        cfg.resume = None
    store = build_store(cfg)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    summary = run_folds(cfg, to_plain(cfg), run_dir, store, json.loads((run_dir / "splits.json").read_text()))
    if summary is not None:
        write_json(run_dir / "cv_summary.json", summary)
        write_text(run_dir / "summary.md", markdown(summary))
    return run_dir, summary
