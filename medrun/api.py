"""The public Python API; the CLI is a thin layer over these functions and the tests call them directly."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from medrun.config import compose, to_plain
from medrun.data.build import build_splits, build_store, list_dataset
from medrun.data.datamodule import FoldDataModule
from medrun.errors import MedrunError
from medrun.tasks import TASKS

__all__ = ["compose", "build_model", "build_datamodule", "build_store", "train", "resume", "aggregate_run", "sweep",
           "compare", "evaluate", "predict", "export", "explain", "reproduce", "reproduce_cost", "reproduce_tables", "check_data", "caches",
           "clear_caches", "model_summary"]


def build_model(cfg: DictConfig):
    """The task's LightningModule (network, loss, metrics, optimisation) for a composed config."""
    task = TASKS.get(cfg.task.name)
    task.complete_config(cfg)
    return task(to_plain(cfg))


def build_datamodule(cfg: DictConfig, fold: int = 0) -> FoldDataModule:
    """The datamodule of fold `fold` of the configured protocol (for exploration and tests)."""
    store = build_store(cfg, preload=False)
    return FoldDataModule(store, build_splits(cfg, store)["folds"][fold], cfg.data, int(cfg.seed))


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


def model_summary(cfg: DictConfig) -> str:
    """Layer table (Lightning's ModelSummary) with trainable and frozen parameter counts."""
    import torch
    from pytorch_lightning.utilities.model_summary import ModelSummary

    def without_weights(node: DictConfig) -> None:  # a cascade's parts are model configs of their own
        for key in list(node.keys()):
            if isinstance(node[key], DictConfig):
                without_weights(node[key])
            elif key in ("encoder_weights", "pretrained") or str(key).endswith("weights_path"):
                node[key] = None

    with open_dict(cfg):  # a summary needs the architecture, not the pretrained values
        without_weights(cfg.model)
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


def train(cfg: DictConfig) -> tuple[Path, dict | None]:
    """`medrun train`: every fold of `cfg` into a new run folder; returns (run folder, cv_summary). See
    medrun.crossval.train for resume=, run_dir= and cv.fold=."""
    from medrun import crossval

    return crossval.train(cfg)


def resume(run_dir: str | Path, allow_unsafe_checkpoints: bool = False) -> tuple[Path, dict | None]:
    """`medrun resume`: continue an interrupted run from its own folder (medrun.crossval.resume)."""
    from medrun.crossval import resume as resume_run

    return resume_run(run_dir, allow_unsafe_checkpoints)


def aggregate_run(run_dir: str | Path) -> dict:
    """`medrun aggregate`: the summary of a run whose folds were trained as separate jobs."""
    from medrun.crossval import aggregate_run as aggregate

    return aggregate(run_dir)


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


def reproduce_cost(table: str, inputs: dict | None = None) -> tuple[list[dict], str]:
    """`medrun reproduce TABLE estimate=true`: each row's training cost at the paper's settings (rows, markdown)."""
    from medrun.reproduce.cost import estimate, markdown

    rows = estimate(table, inputs)
    return rows, markdown(table, rows)


def reproduce_tables() -> list[str]:
    """`medrun reproduce list`: each paper table described (rows, inputs, protocols, paper values)."""
    from medrun.reproduce import describe, load_table, table_names

    return [describe(load_table(t)) for t in table_names()]


def check_data(cfg: DictConfig) -> dict:
    """`medrun data check`: read every sample of `cfg.data`; the report lists bad files under "problems"."""
    from medrun.data.check import check_data as check

    return check(cfg.data)


def fetch_dataset(name: str, size: int, root) -> Path:
    """`medrun data fetch medmnist`: the MedMNIST set `name` at `size` in `root`, MD5-checked (medmnist package)."""
    from medrun.data.sources import fetch_medmnist

    return fetch_medmnist(name, size, root)


def dataset_source(name: str) -> str:
    """`medrun data fetch <data config>`: where that set is published and the layout medrun reads."""
    from medrun.data.sources import describe_source

    return describe_source(name)


def fetch_weights(overrides: list[str]) -> list:
    """`medrun weights fetch`: (weights, cached file) for library=/name= or the experiments' train overrides."""
    from medrun.weights import fetch_weights as fetch

    return fetch(overrides)


def list_weights() -> list[dict]:
    """`medrun weights list`: each set of weights the experiments ask for, cached or not."""
    from medrun.weights import list_weights as listing

    return listing()


def experiment_status(name: str) -> dict:
    """`medrun list experiments`: an experiment's dataset and whether its data and weights are present."""
    from medrun.weights import experiment_status as status

    return status(name)


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
