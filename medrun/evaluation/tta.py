"""Test-time augmentation with the dihedral group as tensor operations."""
from __future__ import annotations

from typing import Callable

import torch

from medrun.errors import MedrunError

# (quarter turns, horizontal flip first). flips = identity, h-flip, v-flip (h-flip + 180°), 180° turn.
TTA = {
    "none": [(0, False)],
    "flips": [(0, False), (0, True), (2, True), (2, False)],
    "d4": [(k, f) for f in (False, True) for k in range(4)],
}


def forward_view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def inverse_view(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


def tta_probabilities(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str,
                      spatial: bool) -> torch.Tensor:
    """Mean of `predict` over the views of `mode`; spatial outputs (masks) are mapped back first."""
    if mode not in TTA:
        raise MedrunError(f"tta={mode!r}; valid: {', '.join(TTA)}")
    views = []
    for k, flip in TTA[mode]:
        y = predict(forward_view(x, k, flip))
        views.append(inverse_view(y, k, flip) if spatial else y)
    # Pairwise sums: for 1, 4 or 8 identical views the mean is exact, so TTA of an invariant model is a no-op.
    while len(views) > 1:
        views = [a + b for a, b in zip(views[::2], views[1::2])] + ([views[-1]] if len(views) % 2 else [])
    return views[0] / len(TTA[mode])
