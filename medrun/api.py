"""The public Python API; the CLI is a thin layer over these functions and the tests call them directly."""
from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from medrun.config import compose, to_plain
from medrun.config_values import check_run_values
from medrun.crossval import run_folds, summarize
from medrun.data.build import build_splits, build_store, list_dataset
from medrun.data.datamodule import FoldDataModule
from medrun.evaluation.reports import markdown
from medrun.report import write_page
from medrun.errors import MedrunError
from medrun.inference import saved_config
from medrun.runs import (RUN_DIR_ENV, FolderLock, check_name, create_run_dir, fold_folder, is_ddp_child, read_json,
                         require_run_dir, unfinished_folds, writable, write_json, write_text)
from medrun.tasks import TASKS
from medrun.training import is_distributed

__all__ = ["compose", "build_model", "build_datamodule", "build_store", "train", "resume", "aggregate_run", "sweep",
           "compare", "evaluate", "predict", "export", "explain", "reproduce", "reproduce_tables", "check_data", "caches",
           "clear_caches", "model_summary"]


def build_model(cfg: DictConfig):
    """The task's LightningModule (network, loss, metrics, optimisation) for a composed config."""
    task = TASKS.get(cfg.task.name)
    task.complete_config(cfg)
    return task(to_plain(cfg))


def check_input_size(cfg: DictConfig) -> None:
    """Fail in one line, naming data.image_size, when the network cannot run at the configured size.

    The network is built and run on the meta device (shapes only, no memory, no weights); a size that fits
    (a multiple of 32, doubled as needed) is suggested.
    """
    import torch

    from medrun.models import build_network

    model_cfg = OmegaConf.merge(cfg.model, {k: None for k in ("pretrained", "encoder_weights", "weights_path",
                                                              "encoder_weights_path") if k in cfg.model})
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


def build_datamodule(cfg: DictConfig, fold: int = 0) -> FoldDataModule:
    """The datamodule of fold `fold` of the configured protocol (for exploration and tests)."""
    store = build_store(cfg, preload=False)
    return FoldDataModule(store, build_splits(cfg, store)["folds"][fold], cfg.data, int(cfg.seed))


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
    dataset = list_dataset(cfg)  # the label facts (classes, mode) enter the config here, before the size check
    check_input_size(cfg)
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
        TASKS.get(cfg.task.name).check_splits(cfg, splits)
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


def composed_config(cfg: DictConfig) -> tuple[str, str | None]:
    """What config.yaml will hold (YAML), with the label facts (classes, mode) filled from the data when it can be
    listed; and why they could not be, else None."""
    note = None
    try:
        list_dataset(cfg)
    except MedrunError as e:
        note = str(e)
    return OmegaConf.to_yaml(cfg), note


def summary_table(summary: dict):
    """The cv_summary as a rich table (mean ± std per metric), as the CLI prints it."""
    from medrun.evaluation.reports import rich_table

    return rich_table(summary)


def write_summary(run_dir: Path, cfg: DictConfig, summary: dict, store=None) -> None:
    """cv_summary.json, summary.md (the mean ± std table and the task's own sections) and report.html (`store`:
    the run's samples, for its montage of held-out images)."""
    write_json(run_dir / "cv_summary.json", summary)
    write_text(run_dir / "summary.md", markdown(summary) + TASKS.get(cfg.task.name).summary_markdown(summary))
    write_page("run", run_dir, store)


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


# The Python face of the other commands: the CLI calls these, and so can a notebook. Each imports its room
# when called, so that `import medrun.api` does not load Grad-CAM, UMAP or Hydra's plugins.

def sweep(overrides: list[str]) -> Path:
    """`medrun -m train ...`: the Hydra multirun; returns the sweep folder (multirun_summary.json/.md)."""
    from medrun.sweep import run_sweep

    return run_sweep(overrides)


def compare(runs: list, output_dir: str | Path | None = None) -> tuple[Path, dict]:
    """`medrun compare`: finished runs side by side on the same folds; returns (folder, compare.json)."""
    from medrun.compare import compare_runs

    return compare_runs(runs, output_dir)


def evaluate(run_dir, **options) -> tuple[Path, dict]:
    """`medrun eval`: see medrun.evaluate.evaluate_run for the options."""
    from medrun.evaluate import evaluate_run

    return evaluate_run(run_dir, **options)


def predict(run_dir, input_path, output, **options) -> dict:
    """`medrun predict`: see medrun.predict.predict_files for the options."""
    from medrun.predict import predict_files

    return predict_files(run_dir, input_path, output, **options)


def export(run_dir, **options) -> dict:
    """`medrun export`: see medrun.export.export_run for the options; returns serving.json (and the folder)."""
    from medrun.export import export_run

    return export_run(run_dir, **options)


def explain(run_dir, **options) -> tuple[Path, dict]:
    """`medrun explain`: see medrun.explain.command.explain_run for the options."""
    from medrun.explain.command import explain_run

    return explain_run(run_dir, **options)


def reproduce(table: str, inputs: dict | None = None, **options) -> Path:
    """`medrun reproduce TABLE`: see medrun.reproduce.reproduce; returns the report folder."""
    from medrun.reproduce import reproduce as run_table

    return run_table(table, inputs, **options)


def reproduce_tables() -> list[str]:
    """`medrun reproduce list`: each paper table described (rows, inputs, protocols, paper values)."""
    from medrun.reproduce import describe, load_table, table_names

    return [describe(load_table(t)) for t in table_names()]


def check_data(cfg: DictConfig) -> dict:
    """`medrun data check`: read every sample of `cfg.data`; the report lists bad files under "problems"."""
    from medrun.data.check import check_data as check

    return check(cfg.data)


def caches(cache_dir: str | None = None) -> tuple[Path, list[dict]]:
    """`medrun cache list`: the persistent data caches (data.cache=disk) under `cache_dir` (or the default)."""
    from medrun.data.disk_cache import cache_root, list_caches

    root = cache_root(cache_dir)
    return root, list_caches(root)


def clear_caches(cache_dir: str | None = None, key: str | None = None) -> tuple[Path, list[str]]:
    """`medrun cache clear`: delete every cache (or the one `key`); returns the keys deleted."""
    from medrun.data.disk_cache import cache_root, clear_caches as clear

    root = cache_root(cache_dir)
    return root, clear(root, key)
