"""SIIM-ACR Pneumothorax layout: `<root>/dicom-images-train/<study>/<series>/<SOPInstanceUID>.dcm` and
`<root>/train-rle.csv` (`ImageId, EncodedPixels`; ` -1` empty; several rows of one image are its objects,
merged). Mask sizes come from each DICOM's Rows/Columns. Sample ids are the ImageIds (UIDs, not PHI);
DICOM tags stay in memory (patients become pseudonymous split groups)."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medrun.data.dicom import read_dicom
from medrun.data.images import listed, to_channels
from medrun.data.rle import decode, parse
from medrun.data.samples import LOADERS, READERS, Dataset, Sample, problem, require_dir
from medrun.errors import MedrunError


def read_rle_csv(path: Path) -> dict[str, list[str]]:
    """ImageId -> its RLE strings, from a CSV whose header may carry spaces (`ImageId, EncodedPixels`)."""
    if not path.is_file():
        raise MedrunError(f"{path} does not exist: the SIIM layout needs train-rle.csv next to dicom-images-train "
                          "(data.csv renames it)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["ImageId", "EncodedPixels"]:
                raise MedrunError(f"{path}: header {header} is not 'ImageId, EncodedPixels'")
            out: dict[str, list[str]] = {}
            for row in reader:
                if row:
                    out.setdefault(row[0].strip(), []).append(row[1].strip() if len(row) > 1 else "")
    except UnicodeDecodeError as e:
        raise MedrunError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    return out


def _groups(image_ids: list[str], patient: dict[str, str], pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Split groups: the connected components of "same patient" and "near-duplicate pair", as pseudonyms."""
    index = {i: k for k, i in enumerate(image_ids)}
    first = {}
    edges = [(k, index[first.setdefault(patient[i], i)]) for k, i in enumerate(image_ids)]
    edges += [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    rows, cols = zip(*edges) if edges else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(image_ids),) * 2)
    _, component = connected_components(graph, directed=False)
    names: dict[int, str] = {}
    return {i: names.setdefault(int(c), f"group_{len(names):05d}") for i, c in zip(image_ids, component)}


def _report(kind: str, items: list[str], fix: str) -> None:
    if items:
        shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
        problem(f"{len(items)} {kind}: {shown}; {fix}")


@READERS.register("siim_acr")
def read_siim(cfg) -> Dataset:
    root = require_dir(cfg.root, "data.root", " (the folder holding dicom-images-train/ and train-rle.csv)")
    images_dir = require_dir(root / cfg.images, "data.images", f" ({cfg.images} under data.root)")
    rles = read_rle_csv(root / cfg.csv)
    found = sorted(p for p in images_dir.rglob("*.dcm") if listed(p, images_dir))
    if not found:
        raise MedrunError(f"no .dcm files under {images_dir}")
    twice = sorted(s for s, n in Counter(p.stem for p in found).items() if n > 1)
    _report(f"ImageId(s) with several DICOM files under {cfg.images}",
            [f"{s} ({', '.join(str(p.relative_to(images_dir)) for p in found if p.stem == s)})" for s in twice],
            "keep one file per ImageId")
    files = {p.stem: p for p in found if p.stem not in twice}
    _report(f"image(s) without a row in {cfg.csv}", sorted(set(files) - set(rles)),
            "add their rows (' -1' for an empty mask) or remove the files")
    _report(f"row(s) of {cfg.csv} without a DICOM under {cfg.images}", sorted(set(rles) - set(files)),
            "remove the rows or add the images")
    ids = sorted(set(files) & set(rles))
    shapes, patient, malformed = {}, {}, []
    for i in ids:
        ds = pydicom.dcmread(files[i], stop_before_pixels=True)
        shapes[i] = (int(ds.Rows), int(ds.Columns))
        patient[i] = str(ds.get("PatientID") or i)  # in memory only: becomes a group pseudonym
        if "-1" in [r.strip() for r in rles[i]] and len(rles[i]) > 1:
            malformed.append(f"{i} (an empty-mask row ' -1' beside object rows: empty or not?)")
            continue
        for rle in rles[i]:
            try:
                parse(rle) if rle.strip() == "-1" else decode(rle, *shapes[i])
            except MedrunError as e:
                malformed.append(f"{i} ({e})")
    _report(f"malformed RLE row(s) in {cfg.csv}", malformed, "fix or remove those rows")
    ids = [i for i in ids if not any(m.startswith(f"{i} (") for m in malformed)]
    pairs = []
    if cfg.get("duplicate_pairs"):
        with open(root / cfg.duplicate_pairs, newline="") as f:
            pairs = [(r["ImageId_a"], r["ImageId_b"]) for r in csv.DictReader(f)]
    groups = _groups(ids, patient, pairs)
    samples = [Sample(id=i, image=files[i], group=groups[i], label=int(any(r != "-1" for r in rles[i])),
                      extra={"rle": rles[i], "shape": list(shapes[i])}) for i in ids]
    return Dataset(samples, siim_loader(cfg))


@LOADERS.register("siim_acr")
def siim_loader(cfg):
    """Decode one listed sample: the DICOM's pixels, and the mask from its RLE rows at Rows x Columns."""
    channels, dicom = int(cfg.channels), dict(cfg.get("dicom") or {})

    def load(s: Sample):
        image = to_channels(read_dicom(s.image, dicom.get("window"), dicom.get("frames", "reject")), channels, s.image)
        mask = np.zeros(s.extra["shape"], dtype=np.uint8)
        for rle in s.extra["rle"]:
            mask |= decode(rle, *s.extra["shape"])
        if mask.shape != image.shape[:2]:
            raise MedrunError(f"{s.image}: image is {image.shape[1]}x{image.shape[0]} but Rows/Columns say "
                              f"{mask.shape[1]}x{mask.shape[0]}")
        return image, mask

    return load
