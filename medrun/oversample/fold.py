"""Oversampling inside one fold: synthetic minority-class images made from the fold's training part only,
written to fold_<k>/oversampling/ (PNGs, manifest.csv, montage.png) and added to that fold's training part.
Validation and test parts stay real; a fold that is resumed reuses its manifest."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from medrun.data.images import read_image
from medrun.data.samples import Sample
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.oversample.methods import OVERSAMPLERS
from medrun.runs import resolve_inside, write_text


def split_classes(cfg, store: SampleStore, train_ids: list[str]) -> tuple[str, list[str], list[str]]:
    """(minority class name, majority-side ids, minority ids) of a training part: binary, or one class against
    the rest (`oversample.minority`)."""
    classes = [str(c) for c in cfg.data.classes]
    labels = {i: store.samples[store.index[i]].label for i in train_ids}
    if cfg.data.get("mode") == "multilabel":
        raise MedrunError("oversample applies to single-label classification, not multi-label (data.mode)")
    wanted = cfg.oversample.get("minority")
    if wanted is None:
        if len(classes) != 2:
            raise MedrunError(f"oversample with {len(classes)} classes needs oversample.minority=<class> "
                              f"(one of {', '.join(classes)}); the other classes form the majority side")
        counts = np.bincount([labels[i] for i in train_ids], minlength=2)
        minority_index = int(np.argmin(counts))
    elif str(wanted) in classes:
        minority_index = classes.index(str(wanted))
    else:
        raise MedrunError(f"oversample.minority={wanted!r} is not a class; valid: {', '.join(classes)}")
    minority = [i for i in train_ids if labels[i] == minority_index]
    majority = [i for i in train_ids if labels[i] != minority_index]
    if not minority or not majority:
        raise MedrunError(f"a training part has no images of one side (minority {classes[minority_index]}: "
                          f"{len(minority)}, rest: {len(majority)}); oversampling needs both")
    return classes[minority_index], majority, minority


def _read_manifest(out_dir: Path) -> list[dict]:
    with open(out_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def oversample_fold(cfg, store: SampleStore, fold: dict, fold_dir: Path) -> tuple[SampleStore, dict]:
    """The store and fold to train on: the real ones, plus the fold's synthetic minority images."""
    name = cfg.get("oversample", {}).get("name", "none")
    if name == "none":
        return store, fold
    if store.segmentation:
        raise MedrunError("oversample applies to classification runs; set oversample=none")
    build = OVERSAMPLERS.get(name)
    out_dir = fold_dir / "oversampling"
    minority_class, majority, minority = split_classes(cfg, store, fold["train"])
    label = [str(c) for c in cfg.data.classes].index(minority_class)
    if not (out_dir / "manifest.csv").is_file():  # a resumed fold reuses what it made before
        made = build(cfg, store, fold, out_dir, majority, minority)
        (out_dir / "synthetic").mkdir(parents=True, exist_ok=True)
        rows = []
        for n, (source, image) in enumerate(made):
            sid = f"syn{fold['fold']}_{n:05d}_{source}"
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(out_dir / "synthetic" / f"{sid}.png")
            rows.append({"synthetic_id": sid, "source_id": source, "method": name, "class": minority_class,
                         "file": f"synthetic/{sid}.png"})
        text = io.StringIO()  # csv quoting: a file name with a comma or quote stays one field
        writer = csv.DictWriter(text, fieldnames=["synthetic_id", "source_id", "method", "class", "file"])
        writer.writeheader()
        writer.writerows(rows)
        write_text(out_dir / "manifest.csv", text.getvalue())  # written last: it marks the step done
    rows = _read_manifest(out_dir)
    channels = int(cfg.data.channels)
    extra = []
    for r in rows:  # a manifest read back may be crafted: its files must lie inside the fold's folder
        # read as a real PNG is (channels, bit depth); the store resizes it with the real images
        image = read_image(resolve_inside(out_dir, r["file"], f"{out_dir / 'manifest.csv'} file"), channels, {})
        extra.append(Sample(id=r["synthetic_id"], label=label, extra={"array": image, "source": r["source_id"]}))
    return store.with_samples(extra), {**fold, "train": [*fold["train"], *(s.id for s in extra)]}

