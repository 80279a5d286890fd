"""The SIIM-ACR run-length encoding: the mask flattened column by column, pairs `start length` where each
start counts from the end of the previous run (the first from pixel 0); `-1` is an empty mask."""
from __future__ import annotations

import numpy as np

from medrun.errors import MedrunError

EMPTY = "-1"
MAX_VALUE = 2**40  # far beyond any image's pixel count, far below where int64 sums wrap


def parse(rle: str) -> np.ndarray:
    """The integers of an RLE string as (runs, 2) `[relative start, length]`; a one-line error when malformed."""
    text = rle.strip()
    if text == EMPTY:
        return np.zeros((0, 2), dtype=np.int64)
    try:
        numbers = [int(v) for v in text.split()]
    except ValueError:
        raise MedrunError(f"RLE {text[:40]!r} holds something other than integers") from None
    too_big = [v for v in numbers if v > MAX_VALUE]
    if too_big:  # would wrap around in 64-bit arithmetic and land inside the image
        raise MedrunError(f"RLE value {too_big[0]} is larger than any image's pixel count")
    values = np.array(numbers, dtype=np.int64)
    if values.size == 0 or values.size % 2:
        raise MedrunError(f"RLE has an odd number of values ({values.size}); it must be pairs 'start length'")
    if (values < 0).any():
        raise MedrunError(f"RLE has negative values ({int(values.min())})")
    return values.reshape(-1, 2)


def decode(rle: str, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 mask of 0/1 from an RLE string."""
    runs = parse(rle)
    flat = np.zeros(height * width, dtype=np.uint8)
    ends = np.cumsum(runs[:, 0] + runs[:, 1])
    starts = ends - runs[:, 1]
    if len(ends) and ends[-1] > flat.size:
        raise MedrunError(f"RLE runs past the image: pixel {int(ends[-1])} of a {height}x{width} image")
    for s, e in zip(starts, ends):
        flat[s:e] = 1
    return flat.reshape(width, height).T  # column-major


def encode(mask: np.ndarray) -> str:
    """The RLE string of a (height, width) mask (nonzero = foreground), the exact inverse of `decode`."""
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    if edges.size == 0:
        return EMPTY
    starts, ends = edges[0::2], edges[1::2]
    relative = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s} {n}" for s, n in zip(relative.tolist(), (ends - starts).tolist()))
