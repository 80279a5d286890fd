"""fastai v1's `get_transforms()` lighting and warp transforms with that library's semantics, as albumentations
transforms (One Case, Table 4.1). Written here because neither albumentations nor kornia has them: fastai changes
brightness and contrast on the logit of the [0, 1] pixel, and its symmetric warp and zoom move the sampling grid
in ways albumentations' Perspective and Affine do not. fastai v1 itself needs torch 1.x."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

EPS = 1e-6  # fastai's logit of 0 or 1 is infinite; clamped, a pixel at 0 or 1 moves only by a rounding step


def _on_logits(img: np.ndarray, change) -> np.ndarray:
    """`change(logit(x))` mapped back through the sigmoid, on uint8 (0-255) or float ([0, 1]) images."""
    x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    x = np.clip(x, EPS, 1 - EPS)
    out = 1.0 / (1.0 + np.exp(-change(np.log(x / (1 - x)))))
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8) if img.dtype == np.uint8 else out


class LogitBrightness(A.ImageOnlyTransform):
    """fastai v1's `brightness`: adds logit(change) to the pixel's logit, change uniform in `change`; 0.5 leaves
    the image as it is (get_transforms: change in (0.4, 0.6), p 0.75)."""

    def __init__(self, change=(0.4, 0.6), p: float = 0.75):
        super().__init__(p=p)
        self.change = tuple(float(v) for v in change)

    def get_params(self) -> dict:
        return {"change": self.py_random.uniform(*self.change)}

    def apply(self, img, change: float = 0.5, **params):
        return _on_logits(img, lambda z: z + np.log(change / (1 - change)))

    def get_transform_init_args_names(self):
        return ("change",)


class LogitContrast(A.ImageOnlyTransform):
    """fastai v1's `contrast`: multiplies the pixel's logit by `scale`, drawn log-uniform in `scale`; 0.5 stays
    0.5 (get_transforms: scale in (0.8, 1.25), p 0.75)."""

    def __init__(self, scale=(0.8, 1.25), p: float = 0.75):
        super().__init__(p=p)
        self.scale = tuple(float(v) for v in scale)

    def get_params(self) -> dict:
        low, high = np.log(self.scale)
        return {"factor": float(np.exp(self.py_random.uniform(low, high)))}

    def apply(self, img, factor: float = 1.0, **params):
        return _on_logits(img, lambda z: z * factor)

    def get_transform_init_args_names(self):
        return ("scale",)


def _grid_warp(img: np.ndarray, matrix: np.ndarray, interpolation: int) -> np.ndarray:
    """Resample `img` where `matrix` (3x3, output pixel -> input pixel) points; reflection padding, fastai's."""
    h, w = img.shape[:2]
    out = cv2.warpPerspective(img, matrix, (w, h), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def _to_pixels(points, h: int, w: int) -> np.ndarray:
    """fastai's [-1, 1] (x, y) coordinates to pixel coordinates (pixel centres, align_corners=False)."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([(p[:, 0] + 1) * w / 2 - 0.5, (p[:, 1] + 1) * h / 2 - 0.5], axis=1)


class _GridTransform(A.DualTransform):
    """A warp of the sampling grid, images bilinear and masks nearest, both with the same matrix."""

    def apply(self, img, matrix=None, **params):
        return _grid_warp(img, matrix, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask, matrix=None, **params):
        return _grid_warp(mask, matrix, cv2.INTER_NEAREST)


class SymmetricWarp(_GridTransform):
    """fastai v1's `symmetric_warp`: the corners (-1, -1), (-1, 1), (1, -1), (1, 1) of the sampling grid move to
    (-1-m3, -1-m1), (-1-m2, 1+m1), (1+m3, -1-m0), (1+m2, 1+m0), four magnitudes uniform in `magnitude`, and
    the grid between them follows the perspective transform through those points (get_transforms: +-0.2, p 0.75)."""

    def __init__(self, magnitude=(-0.2, 0.2), p: float = 0.75):
        super().__init__(p=p)
        self.magnitude = tuple(float(v) for v in magnitude)

    def get_params_dependent_on_data(self, params, data) -> dict:
        h, w = params["shape"][:2]
        m = [self.py_random.uniform(*self.magnitude) for _ in range(4)]
        targets = [[-1 - m[3], -1 - m[1]], [-1 - m[2], 1 + m[1]], [1 + m[3], -1 - m[0]], [1 + m[2], 1 + m[0]]]
        corners = [[-1, -1], [-1, 1], [1, -1], [1, 1]]
        return {"matrix": cv2.getPerspectiveTransform(_to_pixels(corners, h, w), _to_pixels(targets, h, w))}

    def get_transform_init_args_names(self):
        return ("magnitude",)


class RandomZoom(_GridTransform):
    """fastai v1's `rand_zoom`: a zoom by `scale` (uniform in the range) into a window at a random place inside
    the image (row_pct, col_pct uniform in [0, 1]) (get_transforms: scale in (1.0, 1.1), p 0.75)."""

    def __init__(self, scale=(1.0, 1.1), p: float = 0.75):
        super().__init__(p=p)
        self.scale = tuple(float(v) for v in scale)

    def get_params_dependent_on_data(self, params, data) -> dict:
        h, w = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale)
        row_pct, col_pct = self.py_random.random(), self.py_random.random()
        s = 1 - 1 / scale  # the window's centre may move this far (in [-1, 1] units) and stay inside the image
        cx, cy = s * (2 * col_pct - 1), s * (2 * row_pct - 1)
        corners = [[-1, -1], [-1, 1], [1, -1], [1, 1]]
        window = [[x / scale + cx, y / scale + cy] for x, y in corners]
        return {"matrix": cv2.getPerspectiveTransform(_to_pixels(corners, h, w), _to_pixels(window, h, w))}

    def get_transform_init_args_names(self):
        return ("scale",)
