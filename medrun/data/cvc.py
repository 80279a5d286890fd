"""CVC-ClinicDB in the official release layout: `Original/N.tif` and `Ground Truth/N.tif`.

Frames come from 29 video sequences; the sequence becomes the split group so that near-identical
frames of one polyp never sit on both sides of a split.
"""
from bisect import bisect_right

from medrun.data.paired import paired_dataset
from medrun.data.samples import READERS, require_dir
from medrun.errors import MedrunError

# First frame number of sequences 1..29, from the release's README.txt (frames 1..612).
SEQUENCE_STARTS = [1, 26, 51, 68, 79, 104, 127, 152, 178, 200, 206, 228, 253, 278, 298, 318, 343,
                   364, 384, 409, 429, 448, 467, 479, 504, 529, 547, 572, 592]
LAST_FRAME = 612


def sequence_of(stem: str) -> str:
    if not stem.isdigit() or not 1 <= int(stem) <= LAST_FRAME:
        raise MedrunError(f"CVC-ClinicDB frame {stem!r} is not a frame number 1..{LAST_FRAME}; "
                          "use data=folders for renamed copies")
    return f"seq{bisect_right(SEQUENCE_STARTS, int(stem)):02d}"


@READERS.register("cvc_clinicdb")
def read_cvc(cfg):
    root = require_dir(cfg.root, "data.root", " (the CVC-ClinicDB folder holding Original/ and Ground Truth/)")
    if (root / "CVC-ClinicDB").is_dir():  # the folder the release unpacks into
        root = root / "CVC-ClinicDB"
    return paired_dataset(
        cfg, [dict(image_dir=root / "Original", mask_dir=root / "Ground Truth", group_of=sequence_of)]
    )
