"""Image / ground truth / prediction panels for looking at where a segmentation model fails."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(path: Path, image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    shown = image[..., 0] if image.shape[-1] == 1 else image
    for ax, (name, overlay) in zip(axes, [("image", None), ("ground truth", truth), ("prediction", pred)]):
        ax.imshow(shown, cmap="gray")
        if overlay is not None:
            ax.imshow(np.ma.masked_equal(overlay, 0), cmap="autumn", alpha=0.5, vmin=0, vmax=max(1, overlay.max()))
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
