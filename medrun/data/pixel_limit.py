"""The one pixel-count limit every image format is checked against from its header, before decoding."""
from __future__ import annotations

import os
from pathlib import Path

from medrun.errors import MedrunError

MAX_PIXELS_ENV = "MEDRUN_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000  # 10,000 x 10,000: a 245 KB compressed TIFF can otherwise decode to gigabytes


def check_pixel_count(path: Path, count: int) -> None:
    """Refuse, from the header and before decoding, an image of more pixels than the limit (any format)."""
    limit = int(os.environ.get(MAX_PIXELS_ENV) or DEFAULT_MAX_PIXELS)
    if count > limit:
        raise MedrunError(f"{path}: {count:,} pixels is more than the limit of {limit:,} (checked before decoding: "
                          f"a decompression bomb or a whole-slide image); raise it with {MAX_PIXELS_ENV}=<pixels>")
