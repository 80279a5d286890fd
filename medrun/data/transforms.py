"""albumentations pipelines built from config: resize (cached once), augmentation, normalisation."""
from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medrun.errors import MedrunError


def resize(size) -> A.Compose:
    """Resize images bilinearly and masks with nearest neighbour, as the reference pipelines do."""
    h, w = (int(v) for v in size)
    return A.Compose([A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)])


def augmentations(cfg: DictConfig) -> list:
    out = []
    for i, spec in enumerate(cfg.get("augment") or []):
        try:
            out.append(instantiate(OmegaConf.to_container(spec, resolve=True)))
        except Exception as e:
            raise MedrunError(f"data.augment[{i}] cannot be built ({e}); give an albumentations "
                              "transform as {_target_: albumentations.HorizontalFlip, p: 0.5}") from None
    return out


def pipeline(cfg: DictConfig, train: bool) -> A.Compose:
    """Per-sample transform applied after the cached resize: augmentation (train only), normalise, to tensor."""
    steps = augmentations(cfg) if train else []
    return A.Compose([*steps, A.Normalize(**cfg.normalize), ToTensorV2()])
