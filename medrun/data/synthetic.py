"""Procedural segmentation data: textured background with lesion-like blobs, deterministic from a seed."""
from __future__ import annotations

import cv2
import numpy as np

from medrun.data.samples import READERS, Dataset, Sample


def make_sample(index: int, seed: int, size: tuple[int, int], channels: int, num_classes: int,
                empty_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """One image (HxWxC uint8) and its mask (HxW class indices); class k > 0 is a blob of its own brightness."""
    rng = np.random.default_rng([seed, index])
    h, w = size
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(h, w) / 24)
    texture = (texture - texture.mean()) / (texture.std() + 1e-6)
    image = 90 + 18 * texture + rng.normal(0, 6, (h, w))
    mask = np.zeros((h, w), dtype=np.uint8)
    if rng.random() >= empty_fraction:
        yy, xx = np.mgrid[0:h, 0:w]
        for cls in range(1, num_classes):
            for _ in range(rng.integers(1, 3)):
                cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
                ry, rx = rng.uniform(0.06, 0.16) * h, rng.uniform(0.06, 0.16) * w
                angle = rng.uniform(0, np.pi)
                dy, dx = yy - cy, xx - cx
                u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
                v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
                # A wobbly border makes shapes lesion-like rather than perfect ellipses.
                wobble = 1 + 0.15 * np.sin(3 * np.arctan2(v, u) + rng.uniform(0, 6.28))
                mask[u**2 + v**2 <= wobble**2] = cls
        fg = cv2.GaussianBlur((mask > 0).astype(np.float32), (0, 0), sigmaX=1.5)
        brightness = np.choose(mask, [0] + [70 + 50 * k for k in range(num_classes - 1)]).astype(np.float32)
        brightness = cv2.GaussianBlur(brightness, (0, 0), sigmaX=1.5)
        image = image + brightness * np.maximum(fg, mask > 0)
    image = np.clip(image, 0, 255).astype(np.uint8)[:, :, None]
    if channels == 3:
        image = np.repeat(image, 3, axis=2)
    return image, mask


@READERS.register("synthetic")
def read_synthetic(cfg):
    size = tuple(int(v) for v in cfg.source_size)
    args = dict(seed=int(cfg.generator_seed), size=size, channels=int(cfg.channels),
                num_classes=len(cfg.classes), empty_fraction=float(cfg.empty_fraction))
    samples = [Sample(id=f"synth_{i:04d}", group=None, extra={"index": i}) for i in range(int(cfg.count))]
    return Dataset(samples, lambda s: make_sample(s.extra["index"], **args))
