"""The one door to a finished run: its saved config, splits and fold models, loaded safely.

Trust comes from the caller, never from the run folder: a folder someone sent you may carry a
`config.yaml` that says `allow_unsafe_checkpoints: true` next to a malicious checkpoint. Only the current
command (`allow_unsafe_checkpoints=true`) or the environment (`MEDRUN_ALLOW_UNSAFE_CHECKPOINTS=1`) opts in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from medrun.config import to_plain
from medrun.data.store import TransformedSamples, SampleStore
from medrun.data.transforms import pipeline, resize
from medrun.errors import MedrunError
from medrun.evaluation.metrics import compact
from medrun.evaluation.tta import tta_probabilities
from medrun.runs import fold_metrics_file, load_checkpoint, read_json, require_run_dir, resolve_inside
from medrun.tasks import TASKS

UNSAFE_ENV = "MEDRUN_ALLOW_UNSAFE_CHECKPOINTS"


def unsafe_checkpoints_allowed(flag: bool | None = None) -> bool:
    """The current command's opt-in (`flag`) or the environment's; never a run folder's config."""
    return bool(flag) or os.environ.get(UNSAFE_ENV, "") in ("1", "true", "yes")


def resolve_device(device: str = "auto") -> str:
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise MedrunError(f"device={device!r}; valid: auto, cpu, cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise MedrunError(f"device={device}: no CUDA GPU is visible to this process; use device=cpu (or auto)")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def saved_config(run_dir: Path, allow_unsafe: bool = False) -> DictConfig:
    """The run's config.yaml with the trust setting replaced by the caller's."""
    try:
        cfg = OmegaConf.load(run_dir / "config.yaml")
    except Exception as e:  # a copied or edited run folder
        raise MedrunError(f"{run_dir / 'config.yaml'} is damaged ({' '.join(str(e).split())[:100]}); restore it or "
                          "re-create the run") from None
    found = _interpolation(OmegaConf.to_container(cfg))  # to_container does not resolve
    if found:  # medrun writes config.yaml resolved: this one was edited, and resolving it could read the environment
        raise MedrunError(f"{run_dir / 'config.yaml'}: {found[0]} is an interpolation ({found[1]}); a run folder's "
                          "config is written resolved and is never resolved again: replace it by its value")
    with open_dict(cfg):
        cfg.allow_unsafe_checkpoints = unsafe_checkpoints_allowed(allow_unsafe)
    return cfg


def _interpolation(value, path: str = "") -> tuple[str, str] | None:
    """The first key (dotted path) of a plain config whose value holds an interpolation or resolver call
    (`${...}`), with that value; None when there is none."""
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{k}]", v) for k, v in enumerate(value))
    else:
        return (path, value) if isinstance(value, str) and "${" in value else None
    return next((found for p, v in items if (found := _interpolation(v, p))), None)


def with_data_overrides(cfg: DictConfig, data_overrides=()) -> DictConfig:
    """A copy of a run's config with `data.*` overrides (another test set); other keys stay the run's."""
    bad = [o for o in data_overrides if not o.startswith("data.")]
    if bad:
        raise MedrunError(f"only data.* keys can change at evaluation (got {bad[0]}); the rest is the run's config")
    cfg = cfg.copy()
    if data_overrides:
        with open_dict(cfg):
            cfg.merge_with(OmegaConf.from_dotlist(list(data_overrides)))
    return cfg


def fold_checkpoint(run_dir: Path, fold: int) -> Path:
    """The checkpoint a finished fold recorded in metrics.json; it must lie inside the run folder."""
    record = read_json(fold_metrics_file(run_dir, fold), ("metrics",))
    return resolve_inside(run_dir, record["checkpoint"], f"fold_{fold}/metrics.json checkpoint")


@dataclass
class Run:
    """A finished run as a predictor: `config` (the saved one), `splits`, one model per fold, `device`."""

    dir: Path
    config: DictConfig
    splits: dict
    models: list
    device: str

    @property
    def task(self):
        return TASKS.get(self.config.task.name)

    @property
    def spatial(self) -> bool:
        """Whether predictions are maps (segmentation) rather than one score vector per image."""
        return self.task.spatial

    def dataset(self, store: SampleStore, ids: list[str]) -> TransformedSamples:
        """Samples `ids` of `store` (cached at the model's size) preprocessed as at validation: eval, explain
        and export read a run's own images through this."""
        return TransformedSamples(store, store.indices(ids), pipeline(self.config.data, train=False), seed=0)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """One image read from a file (H, W, C uint8, any size) as the model's input (1, C, h, w): the training
        data's resize, then the validation pipeline (predict's path)."""
        data = self.config.data
        sized = resize(data.image_size, bool(data.get("pad_to_square")))(image=image)["image"]
        return pipeline(data, train=False)(image=sized)["image"].float()[None]

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, tta: str = "none", folds: list[int] | None = None) -> torch.Tensor:
        """Mean probabilities of the fold models (`folds`: which, default all) on preprocessed `images`
        (N, C, H, W at the model's input size), with test-time augmentation `tta`."""
        chosen = [self.models[k] for k in (folds if folds is not None else range(len(self.models)))]
        x = images.to(self.device)
        total = 0
        for m in chosen:
            total = total + tta_probabilities(lambda v, m=m: m.probabilities(m(v).float()), x, tta, self.spatial)
        return total / len(chosen)

    @torch.inference_mode()
    def predict_ids(self, store: SampleStore, ids: list[str], tta: str = "none", folds: list[int] | None = None,
                    with_plain: bool = False):
        """Probabilities and targets of samples `ids` of `store`, kept on the run's device (TTA, thresholds and
        metrics run there; only results come back): (probs, targets), or with `with_plain` (plain, tta, targets)
        from one pass over the data."""
        loader = torch.utils.data.DataLoader(self.dataset(store, ids), batch_size=int(self.config.data.batch_size),
                                             pin_memory=self.device.startswith("cuda"))
        plain, augmented, targets = [], [], []
        for batch in loader:
            x = batch["image"].to(self.device, non_blocking=True)
            p = self.predict(x, "none", folds)
            plain.append(p)
            augmented.append(self.predict(x, tta, folds) if tta != "none" else p)
            targets.append(compact(batch["target"]).to(self.device, non_blocking=True))  # on the CPU: no sync
        if not plain:
            raise MedrunError("no samples to predict")
        out = (torch.cat(augmented), torch.cat(targets))
        return (torch.cat(plain), *out) if with_plain else out


def load_run(run_dir, data_overrides=(), device: str = "auto", allow_unsafe_checkpoints: bool | None = None) -> Run:
    """Open a finished run folder: config (plus `data.*` overrides for another test set), splits, fold models."""
    run_dir = require_run_dir(run_dir)
    if not (run_dir / "cv_summary.json").is_file():
        raise MedrunError(f"{run_dir} has not finished training (no cv_summary.json): run `medrun resume {run_dir}` first")
    cfg = with_data_overrides(saved_config(run_dir, bool(allow_unsafe_checkpoints)), data_overrides)
    splits = read_json(run_dir / "splits.json", ("folds",))
    device = resolve_device(device)
    config = to_plain(cfg)
    models = []
    for f in splits["folds"]:
        task = TASKS.get(cfg.task.name)(config)
        state = load_checkpoint(fold_checkpoint(run_dir, f["fold"]), bool(cfg.allow_unsafe_checkpoints))
        task.load_state_dict(state["state_dict"])
        models.append(task.eval().to(device))
    return Run(run_dir, cfg, splits, models, device)
