"""The fold loop: a fresh datamodule, model, trainer and logger per fold; held-out scoring; aggregation."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from medrun.data.datamodule import FoldDataModule
from medrun.data.splits import LEAK_NOTE
from medrun.data.store import SampleStore
from medrun.evaluation.reports import aggregate
from medrun.runs import is_ddp_child, load_checkpoint, write_json
from medrun.tasks import TASKS
from medrun.training import build_callbacks, build_logger, build_trainer, close_logger


def train_fold(cfg: DictConfig, config: dict, run_dir: Path, store: SampleStore, fold: dict, n_folds: int):
    """Train one fold; on rank 0 score its held-out part and write fold_<k>/metrics.json."""
    k = fold["fold"]
    fold_dir = run_dir / f"fold_{k}"
    seed = int(cfg.seed) + k
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = FoldDataModule(store, fold, cfg.data, seed)
    task = TASKS.get(cfg.task.name)(config)
    logger = build_logger(cfg, fold_dir, run_dir, k, config)
    try:
        trainer = build_trainer(cfg, fold_dir, build_callbacks(cfg, fold_dir, f"{k + 1}/{n_folds}"), logger)
        trainer.fit(task, datamodule=datamodule)
    finally:
        close_logger(logger)
    if is_ddp_child() or trainer.global_rank != 0:
        return None
    best = trainer.checkpoint_callback.best_model_path or str(fold_dir / "checkpoints" / "last.ckpt")
    task.load_state_dict(load_checkpoint(best)["state_dict"])
    metrics, extras = task.evaluate_heldout(datamodule.test_dataloader(), [s.id for s in store.samples], fold_dir,
                                            trainer.strategy.root_device, bool(cfg.save_probabilities))
    record = {
        "fold": k, "metrics": metrics, **extras,
        "checkpoint": str(Path(best).relative_to(run_dir)),
        "epochs_trained": trainer.current_epoch,
        "sizes": {part: len(fold[part]) for part in ("train", "val", "test")},
    }
    write_json(fold_dir / "metrics.json", record)
    return record


def run_folds(cfg: DictConfig, config: dict, run_dir: Path, store: SampleStore, splits: dict) -> dict | None:
    """Train every fold and return the cv_summary (None in DDP child processes)."""
    records = [train_fold(cfg, config, run_dir, store, f, len(splits["folds"])) for f in splits["folds"]]
    if is_ddp_child():
        return None
    note = LEAK_NOTE if splits["test_used_for_model_selection"] else None
    summary = aggregate(cfg.name, splits["protocol"], [{"fold": r["fold"], "metrics": r["metrics"]} for r in records],
                        note)
    return {**summary, **TASKS.get(cfg.task.name).finish_run(cfg, run_dir, splits)}
