"""albumentations pipelines built from config: resize (cached once), augmentation, normalisation."""
from __future__ import annotations

import importlib
import inspect

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2
from albumentations.core.composition import BaseCompose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medrun.errors import MedrunError


def resize(size, pad: bool = False) -> A.Compose:
    """Resize images bilinearly and masks with nearest neighbour, as the reference pipelines do. `pad`: keep the
    aspect ratio, padding the shorter side with zeros (MelaNet pads to a square before resizing to 256)."""
    h, w = (int(v) for v in size)
    if pad:
        return A.Compose([A.LongestMaxSize(max_size_hw=(h, w), interpolation=cv2.INTER_LINEAR,
                                           mask_interpolation=cv2.INTER_NEAREST),
                          A.PadIfNeeded(min_height=h, min_width=w, position="center", border_mode=cv2.BORDER_CONSTANT,
                                        fill=0, fill_mask=0)])
    return A.Compose([A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)])


# Only transforms of these packages (and medrun's fastai-semantics transforms) may be built from config: a
# config.yaml read back from a run folder (resume) may come from someone else, and `_target_` can name any callable.
ALLOWED_TARGETS = ("albumentations.", "kornia.augmentation.", "medrun.data.fastai_augment.")


def _is_transform_class(target) -> bool:
    if not (isinstance(target, str) and target.startswith(ALLOWED_TARGETS)):
        return False
    module, _, name = target.rpartition(".")
    try:  # a class defined in a module of the package, not a function or an import such as ...os.system
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    if not inspect.isclass(cls):
        return False
    if cls.__module__.startswith("kornia.augmentation"):
        return True
    return issubclass(cls, (A.BasicTransform, BaseCompose))


def check_targets(spec, key: str) -> None:
    """Every `_target_` in `spec` (nested ones too) names an augmentation class, else a one-line error."""
    if isinstance(spec, dict):
        target = spec.get("_target_")
        if target is not None and not _is_transform_class(target):
            raise MedrunError(f"{key} has _target_ {target!r}: only albumentations (and kornia.augmentation, "
                              "medrun.data.fastai_augment) transforms are allowed, e.g. "
                              "{_target_: albumentations.HorizontalFlip, p: 0.5}")
        for k, v in spec.items():
            check_targets(v, f"{key}.{k}")
    elif isinstance(spec, list):
        for i, v in enumerate(spec):
            check_targets(v, f"{key}[{i}]")


def _build(specs, key: str) -> list:
    out = []
    for i, spec in enumerate(specs or []):
        spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
        check_targets(spec, f"{key}[{i}]")
        try:
            out.append(instantiate(spec))
        except Exception as e:
            raise MedrunError(f"{key}[{i}] cannot be built ({e}); give an albumentations "
                              "transform as {_target_: albumentations.HorizontalFlip, p: 0.5}") from None
    return out


def augmentations(cfg: DictConfig, epoch: int = 0) -> list:
    """data.augment, then every data.augment_schedule entry's transforms from its `epoch` on (One Case adds
    Cutout late). All are built whatever the epoch, so a bad one fails at the start, not halfway."""
    steps = _build(cfg.get("augment"), "data.augment")
    for k, entry in enumerate(cfg.get("augment_schedule") or []):
        key = f"data.augment_schedule[{k}]"
        if not isinstance(entry.get("epoch"), int) or entry.epoch < 0 or not entry.get("augment"):
            raise MedrunError(f"{key} must be {{epoch: <first epoch, from 0>, augment: [<transforms>]}}")
        scheduled = _build(entry.augment, f"{key}.augment")
        steps += scheduled if epoch >= entry.epoch else []
    return steps


def pipeline(cfg: DictConfig, train: bool, epoch: int = 0) -> A.Compose:
    """Per-sample transform applied after the cached resize: augmentation (train only; the schedule's as of
    `epoch`), normalise, to tensor."""
    steps = augmentations(cfg, epoch) if train else []
    return A.Compose([*steps, A.Normalize(**cfg.normalize), ToTensorV2()])
