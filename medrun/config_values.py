"""Typed reads of config values, failing with the key's full name instead of a TypeError."""
from __future__ import annotations

import difflib
import inspect
import math

from omegaconf import DictConfig, OmegaConf

from medrun.errors import MedrunError


def _get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        if part not in node:
            raise MedrunError(f"config key {key} is missing; add it with +{key}=...")
        node = node[part]
    return node


def get_int(cfg: DictConfig, key: str, minimum: int | None = None, prefix: str = "") -> int:
    """`cfg[key]` as an int; errors name the key as `prefix + key` (the node's path in the full config)."""
    value = _get(cfg, key)
    key = prefix + key
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise MedrunError(f"{key}={value!r} is not an integer; pass e.g. {key}=5") from None
    if minimum is not None and value < minimum:
        raise MedrunError(f"{key}={value} must be at least {minimum}")
    return value


def get_float(cfg: DictConfig, key: str, low: float | None = None, high: float | None = None, prefix: str = "") -> float:
    value = _get(cfg, key)
    key = prefix + key
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MedrunError(f"{key}={value!r} is not a number") from None
    if (low is not None and value <= low) or (high is not None and value >= high):
        raise MedrunError(f"{key}={value} must lie strictly between {low} and {high}")
    return value


def check_run_values(cfg: DictConfig) -> None:
    """The values every training run reads, checked before anything is built or written: a bad one ends in one
    line naming the key, not in a traceback from deep inside a library."""
    size = cfg.data.get("image_size")
    try:
        ok = len(size) == 2 and all(int(str(v)) > 0 for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MedrunError(f"data.image_size={size!r}: give [height, width] in pixels, e.g. data.image_size=[256,256]")
    seed = get_int(cfg, "seed", minimum=0)
    if seed > 2**32 - 1:  # what numpy and Lightning's seed_everything take
        raise MedrunError(f"seed={seed} must be at most {2**32 - 1}")
    if "channels" in cfg.data and get_int(cfg.data, "channels", prefix="data.") not in (1, 3):
        raise MedrunError(f"data.channels={cfg.data.channels}; valid: 1 (grey), 3 (RGB)")
    if "count" in cfg.data:  # generated data
        get_int(cfg.data, "count", minimum=1, prefix="data.")
    threshold = OmegaConf.select(cfg, "data.mask.threshold")
    if threshold is not None and get_int(cfg.data.mask, "threshold", minimum=1, prefix="data.mask.") > 65535:
        raise MedrunError(f"data.mask.threshold={threshold}: no mask pixel can reach it (16-bit at most); masks are "
                          "foreground where value >= threshold, e.g. data.mask.threshold=128 for 0/255 masks")
    for key in ("threshold", "decision_threshold"):  # probabilities: 0 or 1 would decide every image alike
        if cfg.task.get(key) is not None:
            get_float(cfg.task, key, low=0, high=1, prefix="task.")
    for k, value in enumerate(cfg.task.get("thresholds") or []):
        if not 0 < float(value) < 1:
            raise MedrunError(f"task.thresholds[{k}]={value} must lie strictly between 0 and 1")
    norm = cfg.data.get("normalize") or {}
    if norm.get("normalization", "standard") != "standard" and ("mean" in norm or "std" in norm):
        # a config that sets mean / std over a per-image default merges into both: albumentations then ignores them
        raise MedrunError(f"data.normalize has normalization={norm.normalization} and mean / std, which that mode "
                          "ignores; add normalization: standard to use the mean and std, or remove them")
    check_weight_files(cfg.model, "model.")
    get_int(cfg.data, "batch_size", minimum=1, prefix="data.")
    get_int(cfg.data, "num_workers", minimum=0, prefix="data.")
    epochs = get_int(cfg.trainer, "max_epochs", minimum=-1, prefix="trainer.")
    if epochs == 0:
        raise MedrunError("trainer.max_epochs=0 trains nothing; give at least 1 (-1: until early stopping)")
    if cfg.callbacks.checkpoint.get("test", "best") not in ("best", "last"):
        raise MedrunError(f"callbacks.checkpoint.test={cfg.callbacks.checkpoint.test!r}; valid: best, last")
    if cfg.callbacks.get("progress") not in ("rich", "tqdm", "none"):
        raise MedrunError(f"callbacks.progress={cfg.callbacks.get('progress')!r}; valid: rich, tqdm, none")
    import pytorch_lightning as pl

    from medrun.tasks.optim import OPTIMIZERS

    check_arguments(cfg.trainer, "trainer.", pl.Trainer, reserved=("callbacks", "logger", "default_root_dir"))
    for key in ("task.optimizer", "task.classifier.optimizer", "task.segmenter.optimizer"):
        node = OmegaConf.select(cfg, key)
        if node is None:
            continue
        check_arguments(node, f"{key}.", OPTIMIZERS.get(str(node.name)), reserved=("params",), own=("name",))
        if "lr" in node:
            lr = get_float(node, "lr", prefix=f"{key}.")
            if not math.isfinite(lr) or lr <= 0:
                raise MedrunError(f"{key}.lr={lr} must be a positive number, e.g. {key}.lr=1e-4")
    over = cfg.get("oversample") or {}
    if over.get("name") == "cyclegan":
        # the generators halve the image len(widths) - 1 times, and instance norm needs more than one value at the
        # bottom: each side must be a multiple of 2**(len - 1) and at least 2**len
        depth = len(list(over.generator.widths))
        step, smallest = 2 ** (depth - 1), 2**depth
        size = [int(str(v)) for v in over.size]
        if any(v % step or v < smallest for v in size):
            raise MedrunError(f"oversample.size={size} does not fit the generator's {depth} levels "
                              f"(oversample.generator.widths): use multiples of {step} from {smallest}, e.g. "
                              f"oversample.size=[{max(smallest, 256)},{max(smallest, 256)}], or fewer widths")


def check_weight_files(node: DictConfig, prefix: str) -> None:
    """Every weights file a model config names (a cascade's parts included) exists: checked before any data is
    read or run folder made. Pretrained weights without a file come from the libraries' caches
    (medrun.models.pretrained.ensure_cached)."""
    from pathlib import Path

    for key in node:
        value = node[key]
        if isinstance(value, DictConfig):
            check_weight_files(value, f"{prefix}{key}.")
        elif str(key).endswith("weights_path") and value and not Path(str(value)).expanduser().is_file():
            raise MedrunError(f"{prefix}{key}={value} does not exist; give the weights file's path")


def positive_index(data) -> int:
    """Two-class single-label data: the index in data.classes of `data.positive`, the class the binary scores,
    the decision threshold and the ROC curve are about (the second class when unset)."""
    positive = data.get("positive")
    if positive is None:
        return 1
    classes = [str(c) for c in data.get("classes") or []]
    if len(classes) != 2 or data.get("mode") == "multilabel":
        raise MedrunError(f"data.positive={positive!r} applies to two-class single-label data (data.classes: "
                          f"{classes}); remove it")
    if str(positive) not in classes:
        raise MedrunError(f"data.positive={positive!r} is not a class; valid: {', '.join(classes)}")
    return classes.index(str(positive))


def check_arguments(node: DictConfig, prefix: str, target, reserved=(), own=()) -> None:
    """Keys of `node` that `target` (a class or function receiving them as keyword arguments) does not take
    fail here, before a run folder exists; `own` keys are medrun's, `reserved` ones medrun passes itself."""
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n in params if n not in reserved and n != "self"]
    for key in (str(k) for k in node):
        if key not in takes and key not in own:
            close = difflib.get_close_matches(key, takes, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"it takes {', '.join(takes)}"
            raise MedrunError(f"{prefix}{key}: {target.__qualname__} takes no argument {key!r}; {hint}")
