"""The batched in-memory path: cached uint8 images and masks gathered as whole batches by index (one tensor
gather, pinned memory, non-blocking transfer), then augmented and normalised on the training device in the
batch: flips alone on the uint8 batch (torchvision's functional flips, exact and cheap), any other set with
kornia. Used when the store caches and every augmentation has a batched counterpart; albumentations stays
the per-sample path otherwise (`data.batched=auto|true|false`)."""
from __future__ import annotations

import kornia.augmentation as K
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from medrun.data.store import SampleStore
from medrun.errors import MedrunError


def _rotate(spec):
    limit = spec.get("limit", 90)
    return K.RandomRotation(degrees=float(limit if not isinstance(limit, (list, tuple)) else max(map(abs, limit))),
                            p=spec.get("p", 0.5))


def _affine(spec):
    scale = spec.get("scale")
    return K.RandomAffine(degrees=0.0, scale=tuple(scale) if scale is not None else None, p=spec.get("p", 0.5))


def _limits(value, default) -> tuple[float, float]:
    value = default if value is None else value
    return (-float(value), float(value)) if not isinstance(value, (list, tuple)) else (float(value[0]), float(value[1]))


class HueSaturationShift(K.IntensityAugmentationBase2D):
    """albumentations.HueSaturationValue on a float RGB batch in [0, 1], with its parameters' meaning: shifts drawn
    per image from the limits and added in HSV, hue in OpenCV's 8-bit units (2 degrees each, wrapping), saturation
    and value in 1/255 steps, clipped; grey pixels (no saturation) stay grey. kornia's ColorJiggle would scale
    the saturation instead, and read the hue limit as a fraction of the circle."""

    def __init__(self, hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20, p: float = 0.5):
        super().__init__(p=p)
        self.limits = {"hue": _limits(hue_shift_limit, 20), "sat": _limits(sat_shift_limit, 30),
                       "val": _limits(val_shift_limit, 20)}

    def generate_parameters(self, batch_shape) -> dict:
        return {k: torch.empty(batch_shape[0]).uniform_(lo, hi) for k, (lo, hi) in self.limits.items()}

    def apply_transform(self, input, params, flags, transform=None):
        from kornia.color import hsv_to_rgb, rgb_to_hsv

        shift = {k: v.to(input.device, input.dtype).view(-1, 1, 1) for k, v in params.items() if k in self.limits}
        h, s, v = rgb_to_hsv(input).unbind(1)  # hue in radians
        h = torch.remainder(h + shift["hue"] * (2 * torch.pi / 180), 2 * torch.pi)
        s = torch.where(s == 0, s, (s + shift["sat"] / 255).clamp(0, 1))
        v = (v + shift["val"] / 255).clamp(0, 1)
        return hsv_to_rgb(torch.stack([h, s, v], 1))


# albumentations class -> its kornia counterpart with the same parameters (images in [0, 1] on the device);
# geometric ones move masks too (nearest neighbour)
KORNIA = {
    "HorizontalFlip": lambda s: K.RandomHorizontalFlip(p=s.get("p", 0.5)),
    "VerticalFlip": lambda s: K.RandomVerticalFlip(p=s.get("p", 0.5)),
    "RandomRotate90": lambda s: K.RandomRotation90(times=(0, 3), p=s.get("p", 0.5)),
    "Rotate": _rotate,
    "Affine": _affine,
    "RandomBrightnessContrast": lambda s: K.ColorJiggle(brightness=s.get("brightness_limit", 0.2),
                                                       contrast=s.get("contrast_limit", 0.2), p=s.get("p", 0.5)),
    "HueSaturationValue": lambda s: HueSaturationShift(s.get("hue_shift_limit"), s.get("sat_shift_limit"),
                                                       s.get("val_shift_limit"), p=s.get("p", 0.5)),
}


RGB_ONLY = {"HueSaturationValue"}  # kornia's hue and saturation need 3 channels


def _specs(cfg: DictConfig) -> list[dict]:
    specs = cfg.get("augment") or []
    return OmegaConf.to_container(specs, resolve=True) if OmegaConf.is_config(specs) else list(specs)


def unsupported(cfg: DictConfig) -> str | None:
    """Why the data config cannot take the batched path, or None."""
    if cfg.get("augment_schedule"):
        return "data.augment_schedule (transforms from an epoch on) has no batched counterpart"
    for spec in _specs(cfg):
        target = str(spec.get("_target_", ""))
        name = target.rsplit(".", 1)[-1]
        if not target.startswith("albumentations.") or name not in KORNIA:
            return f"data.augment has {target or spec} without a batched (kornia) counterpart; those with one: " \
                   + ", ".join(KORNIA)
        if name in RGB_ONLY and int(cfg.get("channels", 3)) != 3:
            return f"{name} needs 3-channel images (data.channels={cfg.channels})"
    if not set(cfg.normalize) <= {"mean", "std", "max_pixel_value", "normalization"}:
        return f"data.normalize {dict(cfg.normalize)} has no batched counterpart"
    return None


FLIPS = {"HorizontalFlip": TF.horizontal_flip, "VerticalFlip": TF.vertical_flip}


class BatchFlips:
    """Random flips of each sample of a uint8 batch (and its masks) with probability p each, in place. Exact
    on uint8, so it runs before the float conversion. The batch must be the caller's own copy, as
    CachedBatches' gathers are.

    Each chosen sample is flipped and written back on its own: on the CPU (192x256, batch 32) that is 3-10x
    faster than torch.where, index_copy_ or index_put_ over the whole batch. The draws come from the CPU
    generator, so a GPU batch needs no synchronisation to read them."""

    def __init__(self, steps: list[tuple]):
        self.steps = steps  # [(flip function, p)]

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None):
        for flip, p in self.steps:
            for i in (torch.rand(len(x)) < p).nonzero().flatten().tolist():
                x[i] = flip(x[i])
                if mask is not None:
                    mask[i] = flip(mask[i])
        return x, mask


def batch_augmentation(cfg: DictConfig):
    """The data.augment list for whole batches: BatchFlips when it holds flips only, else one kornia
    AugmentationSequential over (images, masks); None without entries."""
    specs = _specs(cfg)
    names = [str(spec["_target_"]).rsplit(".", 1)[-1] for spec in specs]
    if specs and set(names) <= set(FLIPS):
        return BatchFlips([(FLIPS[n], float(spec.get("p", 0.5))) for n, spec in zip(names, specs)])
    steps = [KORNIA[n]({k: v for k, v in spec.items() if k != "_target_"}) for n, spec in zip(names, specs)]
    return K.AugmentationSequential(*steps, data_keys=["input", "mask"]) if steps else None


def use_batched(cfg: DictConfig, store: SampleStore, device_type: str = "cpu") -> bool:
    """data.batched: true forces the batched path (or fails saying why), false the per-sample one; auto takes
    it when training on a GPU and it can be used. On the CPU auto keeps the per-sample path: kornia's sets are
    slower there than albumentations, and the flips path's gain is small beside the step and depends on the
    allocator (the float batch is a fresh allocation; scripts/bench.py --only data)."""
    mode = str(cfg.get("batched", "auto")).lower()
    if mode not in ("auto", "true", "false"):
        raise MedrunError(f"data.batched={mode!r}; valid: auto, true, false")
    if mode == "false" or (mode == "auto" and device_type != "cuda"):
        return False
    why = "data.cache=off" if not store.cached else unsupported(cfg)
    if why and mode == "true":
        raise MedrunError(f"data.batched=true cannot be used: {why}")
    return why is None


class CachedBatches(Dataset):
    """The cached samples `indices` of a store as uint8 tensors, fetched a whole batch at a time."""

    def __init__(self, store: SampleStore, indices: list[int]):
        images, targets = zip(*(store.get(i) for i in indices))
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
        self.targets = torch.from_numpy(np.stack(targets)) if np.ndim(targets[0]) or store.segmentation \
            else torch.as_tensor(np.array(targets))
        self.indices = torch.as_tensor(indices)

    def __len__(self):
        return len(self.images)

    def __getitems__(self, ks: list[int]) -> dict:
        k = torch.as_tensor(ks)  # index_select: an order of magnitude faster than advanced indexing on the CPU
        return {"image": self.images.index_select(0, k), "target": self.targets.index_select(0, k),
                "index": self.indices.index_select(0, k)}

    def __getitem__(self, k: int) -> dict:
        return {key: v[0] for key, v in self.__getitems__([k]).items()}


def keep_batch(batch):
    """collate_fn of CachedBatches: the batch is already one."""
    return batch


def normalize(x: torch.Tensor, spec: DictConfig) -> torch.Tensor:
    """albumentations.Normalize on a batch (B, C, H, W) of pixel values: fixed mean/std, or per-image z-score
    (`normalization: image` / `image_per_channel`, with albumentations' eps and clip) or min-max
    (`normalization: min_max`). A float batch is
    normalised in place; a uint8 one is converted in the same pass as the subtraction (one float batch)."""
    kind = spec.get("normalization", "standard")
    if kind in ("image", "image_per_channel"):
        x = x.float()
        dims = (1, 2, 3) if kind == "image" or x.shape[1] == 1 else (2, 3)
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True, unbiased=False) + 1e-4
        return x.sub_(mean).div_(std).clamp_(-20, 20)
    if kind == "min_max":  # per image to [0, 1] (MelaNet's Eq. 2.7)
        x = x.float()
        low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        return x.sub_(low).div_((high - low).clamp_(min=1e-4))
    if kind != "standard":
        raise MedrunError(f"data.normalize.normalization={kind!r} has no batched counterpart; set data.batched=false")
    peak = float(spec.get("max_pixel_value", 255.0))
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mean = torch.as_tensor(spec.get("mean", (0.485, 0.456, 0.406)), dtype=dtype, device=x.device)
    std = torch.as_tensor(spec.get("std", (0.229, 0.224, 0.225)), dtype=dtype, device=x.device)
    shape = (1, -1, 1, 1) if mean.ndim else (1, 1, 1, 1)
    return torch.sub(x, mean.view(shape) * peak, out=x if x.is_floating_point() else None).div_(std.view(shape) * peak)


def augment_and_normalize(batch: dict, augmentation, spec: DictConfig, segmentation: bool) -> dict:
    """On the device: the augmentation (BatchFlips on the uint8 batch; kornia on images in [0, 1], masks alike
    with nearest neighbour), then normalisation; masks become long class indices."""
    if isinstance(augmentation, BatchFlips):
        batch["image"], mask = augmentation(batch["image"], batch["target"] if segmentation else None)
        if segmentation:
            batch["target"] = mask
        augmentation = None
    x = batch["image"]  # uint8: normalize converts it in the same pass
    if augmentation is not None:
        x = x.float()
        if segmentation:
            mask = batch["target"][:, None].float()
            x, mask = augmentation(x / 255.0, mask)
            batch["target"] = mask[:, 0].round().long()
        else:
            x = augmentation(x / 255.0, torch.zeros_like(x[:, :1]))[0]
        x = x * 255.0
    elif segmentation:
        batch["target"] = batch["target"].long()
    batch["image"] = normalize(x, spec)
    if not segmentation:
        t = batch["target"]
        batch["target"] = t.float() if t.ndim > 1 else t.long()
    return batch
