"""The train command: a new run folder (or a fold job's share of one), the fold loop (a fresh datamodule,
model, trainer and logger per fold; held-out scoring), the summary; resume and aggregate.

Resumable: a fold with metrics.json is finished and kept; a fold with checkpoints/last.ckpt continues
from it (optimizer, scheduler, epoch, callbacks, RNG and W&B run id restored); other folds start anew.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from medrun.config import to_plain
from medrun.config_values import check_run_values
from medrun.data.build import build_splits, build_store, copies_note, list_dataset

from medrun.data.datamodule import FoldDataModule
from medrun.data.splits import LEAK_NOTE
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.evaluation.reports import aggregate, markdown
from medrun.inference import saved_config
from medrun.models.pretrained import ensure_cached, without_weights
from medrun.oversample import oversample_fold
from medrun.report import write_page
from medrun.runs import (RUN_DIR_ENV, FolderLock, check_name, create_run_dir, fold_folder, fold_records, is_ddp_child,
                         load_checkpoint, read_json, require_run_dir, resolve_inside, unfinished_folds, writable,
                         write_json, write_text)
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
    last = str(fold_dir / "checkpoints" / "last.ckpt")
    tested = last if cfg.callbacks.checkpoint.get("test", "best") == "last" else \
        trainer.checkpoint_callback.best_model_path or last
    write_json(fold_dir / "trained.json", {"checkpoint": str(Path(tested).relative_to(run_dir)),
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
    notes = [LEAK_NOTE if splits["test_used_for_model_selection"] else None, TASKS.get(cfg.task.name).leak_note(cfg),
             copies_note(splits["copies_across_parts"]) if splits.get("copies_across_parts") else None,
             *(f"data: {w}" for w in splits.get("data_warnings", []))]
    note = "; ".join(n for n in notes if n) or None
    repeats = {f["fold"]: f["repeat"] for f in splits["folds"] if "repeat" in f}
    summary = aggregate(cfg.name, splits["protocol"],
                        [{"fold": r["fold"], **({"repeat": repeats[r["fold"]]} if r["fold"] in repeats else {}),
                          "metrics": r["metrics"]} for r in records], note)

    def over_folds(metrics_of) -> dict:
        spread = aggregate(cfg.name, splits["protocol"],
                           [{"fold": r["fold"], "metrics": metrics_of(r)} for r in records])
        return {k: spread[k] for k in ("mean", "std", "defined_in")}

    if all("validation" in r for r in records):
        summary["validation"] = over_folds(lambda r: r["validation"])
    if all("trivial" in r for r in records):
        summary["trivial"] = {name: over_folds(lambda r: r["trivial"][name]) for name in records[0]["trivial"]}
    return {**summary, **TASKS.get(cfg.task.name).finish_run(cfg, run_dir, splits)}


def check_input_size(cfg: DictConfig) -> None:
    """Fail in one line, naming data.image_size, when the network cannot run at the configured size.

    The network is built and run on the meta device (shapes only, no memory, no weights); a size that fits
    (a multiple of 32, doubled as needed) is suggested.
    """
    import torch

    from medrun.models import build_network

    model_cfg = OmegaConf.create(without_weights(OmegaConf.to_container(cfg.model, resolve=True)))
    out = TASKS.get(cfg.task.name).output_channels(len(cfg.data.get("classes") or [0, 1]))

    def runs(h: int, w: int) -> str | None:
        with torch.device("meta"):
            net = build_network(model_cfg, int(cfg.data.channels), out).eval()
            try:
                net(torch.empty(2, int(cfg.data.channels), h, w))
            except (RuntimeError, ValueError) as e:
                return str(e).splitlines()[0][:160]
        return None

    h, w = (int(v) for v in cfg.data.image_size)
    error = runs(h, w)
    if error is None:
        return
    hint = ""
    up = lambda v, m: -(-v // m) * m  # noqa: E731  (round up to a multiple of m)
    for size in [(up(h, 32), up(w, 32))] + [(up(h, 32) * f, up(w, 32) * f) for f in (2, 4, 8)]:
        if runs(*size) is None:
            hint = f"; [{size[0]}, {size[1]}] works"
            break
    model = " ".join(str(v) for v in (cfg.model.name, cfg.model.get("backbone")) if v)
    raise MedrunError(f"data.image_size=[{h}, {w}] does not fit model {model} ({error}); change data.image_size{hint}")


def check_task(cfg: DictConfig) -> None:
    """Build the task once on the meta device (no memory, no weights), so that what its constructor checks (losses
    and their arguments, class weights, the classes it names) and the encoder callbacks.backbone_finetuning
    freezes fail before a run folder exists, not in the first fold."""
    import torch

    config = to_plain(cfg)
    config["model"] = without_weights(config["model"])
    with torch.device("meta"):
        task = TASKS.get(cfg.task.name)(config)
        if (cfg.callbacks.get("backbone_finetuning") or {}).get("enabled"):
            task.backbone  # noqa: B018 - the property raises, naming the key, when the network has no encoder


def train(cfg: DictConfig) -> tuple[Path, dict | None]:
    """Run every fold of `cfg` into a new run folder; returns (run folder, cv_summary).

    With `resume=<run folder>` it continues that run instead (see `resume`). With `run_dir=` the run goes to
    that folder; with `cv.fold=k` too, only fold k trains there (folds as jobs), and the summary is written
    once every fold has finished (or by `medrun aggregate`).
    """
    if cfg.get("resume"):
        return resume(cfg.resume, bool(cfg.allow_unsafe_checkpoints))
    check_name(cfg.name)
    check_run_values(cfg)
    if not is_ddp_child():
        writable(cfg.run_dir if cfg.get("run_dir") else cfg.paths.output_dir,
                 "run_dir" if cfg.get("run_dir") else "paths.output_dir")
    ensure_cached(cfg.model)  # pretrained weights fetched (or found offline) before any data is read
    dataset = list_dataset(cfg)  # the label facts (classes, mode) enter the config here, before the size check
    check_input_size(cfg)
    check_task(cfg)
    distributed = is_distributed(cfg)
    if distributed and (cfg.get("oversample") or {}).get("name", "none") != "none":
        raise MedrunError("oversample trains its GAN on one device: use trainer=gpu or cpu, not a DDP strategy")
    only = cfg.cv.get("fold")
    if only is not None and not cfg.get("run_dir"):
        raise MedrunError("cv.fold=k trains one fold into a shared folder: also pass run_dir=<folder>")
    if is_ddp_child():
        run_dir = _wait_for_run_dir(cfg)
        store = build_store(cfg, preload=False, dataset=dataset)  # rank 0 already checked every file
        splits = read_json(run_dir / "splits.json", ("folds",))
    else:
        store = build_store(cfg, dataset=dataset)
        splits = build_splits(cfg, store)
        TASKS.get(cfg.task.name).check_splits(cfg, splits, store)
        run_dir, lock = _open_run_dir(cfg, splits)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        summary = run_folds(cfg, to_plain(cfg), run_dir, store, splits, only=only)
        if summary is not None:
            write_summary(run_dir, cfg, summary, store)
    finally:
        if not is_ddp_child():
            lock.release()
    return run_dir, summary


def _saved(cfg: DictConfig) -> str:
    """config.yaml's text: the resolved config, fold-independent (cv.fold is a job's, not the run's)."""
    config = to_plain(cfg)
    config["cv"]["fold"] = None
    config["overrides"] = [o for o in config.get("overrides", []) if not o.startswith("cv.fold=")]
    return OmegaConf.to_yaml(OmegaConf.create(config))


def _open_run_dir(cfg: DictConfig, splits: dict) -> tuple[Path, FolderLock]:
    """A new timestamped folder, or `run_dir=`: new, or (folds as jobs) one holding this same run; with the lock this
    process holds while it writes there (the run folder, or a fold job's own fold folder)."""
    if not cfg.get("run_dir"):
        run_dir = create_run_dir(cfg.paths.output_dir, cfg.name)
        lock = FolderLock(run_dir, "run folder")
    else:
        run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
        # held while claiming, so two processes never both write config.yaml; fold jobs wait for each other's claims
        lock = FolderLock(run_dir, "run_dir=", wait=cfg.cv.get("fold") is not None)
        if (run_dir / "config.yaml").is_file():
            if cfg.cv.get("fold") is None:
                raise MedrunError(f"run_dir={run_dir} already holds a run; runs never overwrite each other "
                                  "(choose a new folder, or cv.fold=k to add a fold to it)")
            # the composed configs, not the override strings: order and spelling (True / true) do not matter, nor
            # where outputs would go (the folder is given) or how its path was spelt
            def run_config(config: dict) -> dict:
                return {k: v for k, v in config.items() if k not in ("overrides", "run_dir", "paths")}

            theirs = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
            ours = OmegaConf.to_container(OmegaConf.create(_saved(cfg)))
            if run_config(theirs) != run_config(ours) or json.loads((run_dir / "splits.json").read_text()) != splits:
                raise MedrunError(f"run_dir={run_dir} holds a run of another configuration or split; "
                                  "every fold job of one run must share all overrides but cv.fold")
            return run_dir, _fold_lock(run_dir, lock, cfg.cv.get("fold"))
    write_text(run_dir / "config.yaml", _saved(cfg))
    write_text(run_dir / "overrides.txt", "".join(f"{o}\n" for o in cfg.get("overrides", []) if not o.startswith("cv.fold=")))
    write_json(run_dir / "splits.json", splits)
    return run_dir, _fold_lock(run_dir, lock, cfg.cv.get("fold"))


def _fold_lock(run_dir: Path, run_lock: FolderLock, fold) -> FolderLock:
    """A fold job writes its own fold folder only: it trades the run folder's lock for that fold's."""
    if fold is None:
        return run_lock
    try:
        return FolderLock(fold_folder(run_dir, fold), f"fold {int(fold)} of")
    finally:
        run_lock.release()


def _wait_for_run_dir(cfg: DictConfig, timeout_s: float = 600) -> Path:
    """The run folder of global rank 0, for the other DDP processes (other nodes: `run_dir=`)."""
    import time

    folder = os.environ.get(RUN_DIR_ENV) or cfg.get("run_dir")
    if not folder:
        raise MedrunError(f"this DDP process is not global rank 0 and has no run folder: pass run_dir=<a new folder "
                          f"on a filesystem all nodes share> (or set {RUN_DIR_ENV})")
    run_dir = Path(str(folder)).expanduser().resolve()
    deadline = time.time() + timeout_s
    while not (run_dir / "splits.json").is_file():
        if time.time() > deadline:
            raise MedrunError(f"rank 0 did not write {run_dir}/splits.json within {timeout_s:.0f} s")
        time.sleep(1)
    return run_dir


def aggregate_run(run_dir: str | Path) -> dict:
    """cv_summary.json and summary.md of a run whose folds were trained as separate jobs."""
    run_dir = require_run_dir(run_dir)
    cfg = saved_config(run_dir)
    splits = read_json(run_dir / "splits.json", ("folds",))
    missing = unfinished_folds(run_dir, splits)
    if missing:
        raise MedrunError(f"{run_dir}: fold(s) {missing} have not finished; run them with cv.fold=k run_dir={run_dir}")
    summary = summarize(cfg, run_dir, splits)
    write_summary(run_dir, cfg, summary)
    return summary


def write_summary(run_dir: Path, cfg: DictConfig, summary: dict, store=None) -> None:
    """cv_summary.json, summary.md (the mean ± std table and the task's own sections) and, unless
    html_report=false, report.html (`store`: the run's samples, for its montage of held-out images)."""
    write_json(run_dir / "cv_summary.json", summary)
    write_text(run_dir / "summary.md", markdown(summary) + TASKS.get(cfg.task.name).summary_markdown(summary))
    if cfg.get("html_report", True):  # runs saved before the key existed wrote the page
        write_page("run", run_dir, store)


def resume(run_dir: str | Path, allow_unsafe_checkpoints: bool = False) -> tuple[Path, dict | None]:
    """Continue an interrupted run from its own folder: its saved config and splits, never the command line.

    Trust (`allow_unsafe_checkpoints`) comes from this call or the environment, never from the folder.
    """
    run_dir = require_run_dir(run_dir)
    if (run_dir / "cv_summary.json").is_file():
        raise MedrunError(f"{run_dir} is complete (cv_summary.json exists); nothing to resume")
    cfg = saved_config(run_dir, allow_unsafe_checkpoints)
    with open_dict(cfg):
        cfg.resume = None
    fold = cfg.cv.get("fold")
    lock = FolderLock(fold_folder(run_dir, fold) if fold is not None else run_dir,
                      f"fold {fold} of" if fold is not None else "run folder")
    try:
        store = build_store(cfg)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        summary = run_folds(cfg, to_plain(cfg), run_dir, store, json.loads((run_dir / "splits.json").read_text()),
                            only=fold)
        if summary is not None:
            write_summary(run_dir, cfg, summary)
    finally:
        lock.release()
    return run_dir, summary
