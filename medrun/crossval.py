"""The fold loop: a fresh datamodule, model, trainer and logger per fold; held-out scoring; aggregation.

Resumable: a fold with metrics.json is finished and kept; a fold with checkpoints/last.ckpt continues
from it (optimizer, scheduler, epoch, callbacks, RNG and W&B run id restored); other folds start anew.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from medrun.data.datamodule import FoldDataModule
from medrun.data.splits import LEAK_NOTE
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.evaluation.reports import aggregate
from medrun.oversample import oversample_fold
from medrun.runs import (fold_folder, fold_records, is_ddp_child, load_checkpoint, resolve_inside,
                         unfinished_folds, write_json)
from medrun.tasks import TASKS
from medrun.training import (NonFiniteLossError, build_callbacks, build_loggers, build_trainer, chosen_loggers,
                             close_loggers, is_distributed, tracker_id)


def tracker_ids(fold_dir: Path) -> dict:
    """The tracker runs (name -> id) a fold logged to before, so that a resume continues them."""
    path = fold_dir / "trackers.json"
    if path.is_file():
        return json.loads(path.read_text())
    legacy = fold_dir / "wandb_id.txt"  # runs from before trackers.json
    return {"wandb": legacy.read_text().strip()} if legacy.is_file() else {}


def _fit(cfg, config, run_dir, fold_dir, fold, n_folds, task, datamodule) -> pl.Trainer:
    k = fold["fold"]
    last = fold_dir / "checkpoints" / "last.ckpt"
    resume_from = None
    if last.is_file():
        load_checkpoint(last, bool(cfg.allow_unsafe_checkpoints))  # refuse unsafe files before Lightning opens them
        resume_from = str(last)
    loggers = build_loggers(cfg, fold_dir, run_dir, k, config, tracker_ids(fold_dir))
    try:
        ids = {name: tracker_id(lg) for name, lg in zip(chosen_loggers(cfg), loggers)}
        if any(ids.values()) and not is_ddp_child():
            write_json(fold_dir / "trackers.json", {name: i for name, i in ids.items() if i})
        trainer = build_trainer(cfg, fold_dir, build_callbacks(cfg, fold_dir, f"{k + 1}/{n_folds}"), loggers)
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from,
                    weights_only=not cfg.allow_unsafe_checkpoints if resume_from else None)
    finally:
        close_loggers(loggers)
    return trainer


def _explain(e: Exception) -> str | None:
    """A one-line cause and fix for the failures a user can act on, else None."""
    text = str(e)
    if isinstance(e, NonFiniteLossError):
        return text
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in text.lower():
        return ("out of memory; lower data.batch_size or data.image_size, use trainer.precision=16-mixed "
                "(bf16-mixed on CPU), or set data.cache=disk (memory-mapped, shared by workers) or off")
    if "DataLoader worker" in text:
        return (f"a data loader worker crashed ({text.splitlines()[0][:120]}); set data.num_workers=0 to see the "
                "underlying error, or lower memory use with fewer workers or data.cache=disk")
    return None


def train_fold(cfg: DictConfig, config: dict, run_dir: Path, store: SampleStore, fold: dict, n_folds: int) -> bool:
    """Train one fold unless it has trained before; returns whether this process should score it (rank 0)."""
    k = fold["fold"]
    fold_dir = fold_folder(run_dir, k)
    if (fold_dir / "metrics.json").is_file() or (fold_dir / "trained.json").is_file():
        return not is_ddp_child()
    seed = int(cfg.seed) + k
    train_store, train_fold_split = oversample_fold(cfg, store, fold, fold_dir)  # synthetic images: training only
    pl.seed_everything(seed, workers=True, verbose=False)
    task = TASKS.get(cfg.task.name)(config)
    datamodule = FoldDataModule(train_store, task.training_split(train_store, train_fold_split), cfg.data, seed)
    try:
        trainer = _fit(cfg, config, run_dir, fold_dir, fold, n_folds, task, datamodule)
    except Exception as e:
        reason = _explain(e)
        if reason is None:
            raise
        if not is_ddp_child():
            write_json(run_dir / "failed.json", {"fold": k, "error": reason})
        raise MedrunError(f"fold {k} failed: {reason}; the run folder {run_dir} records it (failed.json)") from None
    if is_ddp_child() or trainer.global_rank != 0:
        return False
    best = trainer.checkpoint_callback.best_model_path or str(fold_dir / "checkpoints" / "last.ckpt")
    write_json(fold_dir / "trained.json", {"checkpoint": str(Path(best).relative_to(run_dir)),
                                           "epochs_trained": trainer.current_epoch})
    return True


def score_fold(cfg: DictConfig, config: dict, run_dir: Path, store: SampleStore, fold: dict) -> dict:
    """Score a trained fold's held-out part once (rank 0) and write fold_<k>/metrics.json."""
    k = fold["fold"]
    fold_dir = fold_folder(run_dir, k)
    if (fold_dir / "metrics.json").is_file():  # finished before an interruption: keep it as it is
        return json.loads((fold_dir / "metrics.json").read_text())
    trained = json.loads((fold_dir / "trained.json").read_text())
    checkpoint = resolve_inside(run_dir, trained["checkpoint"], f"fold_{k}/trained.json checkpoint")
    task = TASKS.get(cfg.task.name)(config)
    task.load_state_dict(load_checkpoint(checkpoint, bool(cfg.allow_unsafe_checkpoints))["state_dict"])
    if cfg.task.get("feature_classifier"):  # a head fitted on the training part as trained: synthetic images too
        store, fold = oversample_fold(cfg, store, fold, fold_dir)
    datamodule = FoldDataModule(store, fold, cfg.data, int(cfg.seed) + k, batched=False)
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda", "auto") else "cpu"
    metrics, extras = task.evaluate_heldout(datamodule, [s.id for s in store.samples], fold_dir,
                                            device, bool(cfg.save_probabilities))
    record = {"fold": k, "metrics": metrics, **extras, **trained,
              "sizes": {part: len(fold[part]) for part in ("train", "val", "test")}}
    validation = task.validation_metrics(datamodule, device)
    if validation is not None:  # what a sweep selects on by default (never the test part)
        record["validation"] = validation
    used = fold_dir / "oversampling" / "training_set.json"
    if used.is_file():  # what an oversampled fold trained on: class counts and skew (a column of sweep tables)
        record["training_set"] = json.loads(used.read_text())
        if record["training_set"]["skew"] is not None:
            record["metrics"]["training_skew"] = record["training_set"]["skew"]
        if len(record["training_set"]["targets"]) == 1:  # the oversampled class's numbers under one name
            target = record["training_set"]["targets"][0]
            for name in ("sensitivity", "fn"):
                if f"{name}_{target}" in metrics:
                    record["metrics"][f"{name}_target"] = metrics[f"{name}_{target}"]
    trivial = TASKS.get(cfg.task.name).trivial_rows(cfg, store, fold)
    if trivial:  # reference rows on the same test part, under their own key: never a method's metrics
        record["trivial"] = trivial
    write_json(fold_dir / "metrics.json", record)
    return record


def run_folds(cfg: DictConfig, config: dict, run_dir: Path, store: SampleStore, splits: dict,
              only: int | None = None) -> dict | None:
    """Train every fold (or fold `only`) and return the cv_summary once every fold has finished; None in DDP
    processes other than rank 0, and while other folds of a folds-as-jobs run are still missing.

    One process scores each fold right after training it. Under DDP the other ranks would wait at the
    next fold's first collective while rank 0 scores (a timeout risk), so rank 0 scores after the last fold.
    """
    folds = splits["folds"]
    if only is not None:
        if not 0 <= int(only) < len(folds):
            raise MedrunError(f"cv.fold={only}: this protocol has folds 0..{len(folds) - 1}")
        folds = [folds[int(only)]]
    distributed = is_distributed(cfg)
    to_score = []
    for f in folds:
        if train_fold(cfg, config, run_dir, store, f, len(splits["folds"])):
            to_score.append(f)
            if not distributed:
                score_fold(cfg, config, run_dir, store, f)
    if is_ddp_child() or len(to_score) < len(folds):
        return None
    for f in folds:
        score_fold(cfg, config, run_dir, store, f)
    if unfinished_folds(run_dir, splits):
        return None  # folds as jobs: the last one to finish (or `medrun aggregate`) writes the summary
    return summarize(cfg, run_dir, splits)


def summarize(cfg: DictConfig, run_dir: Path, splits: dict) -> dict:
    """The cv_summary from every fold's metrics.json: mean, std, the protocol's note, the task's extras."""
    records = fold_records(run_dir, splits, ("fold", "metrics"))
    (run_dir / "failed.json").unlink(missing_ok=True)  # a resumed run that completes is no longer failed
    notes = [LEAK_NOTE if splits["test_used_for_model_selection"] else None, TASKS.get(cfg.task.name).leak_note(cfg)]
    note = "; ".join(n for n in notes if n) or None
    repeats = {f["fold"]: f["repeat"] for f in splits["folds"] if "repeat" in f}
    summary = aggregate(cfg.name, splits["protocol"],
                        [{"fold": r["fold"], **({"repeat": repeats[r["fold"]]} if r["fold"] in repeats else {}),
                          "metrics": r["metrics"]} for r in records], note)
    if all("validation" in r for r in records):
        summary["validation"] = {k: v for k, v in aggregate(cfg.name, splits["protocol"], [
            {"fold": r["fold"], "metrics": r["validation"]} for r in records]).items() if k in ("mean", "std")}
    if all("trivial" in r for r in records):
        summary["trivial"] = {name: {k: v for k, v in aggregate(cfg.name, splits["protocol"], [
            {"fold": r["fold"], "metrics": r["trivial"][name]} for r in records]).items() if k in ("mean", "std")}
            for name in records[0]["trivial"]}
    return {**summary, **TASKS.get(cfg.task.name).finish_run(cfg, run_dir, splits)}
