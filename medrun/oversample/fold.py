"""Oversampling inside one fold: synthetic images of a target class made from the fold's training part only,
written to fold_<k>/oversampling/ (one folder per translator when there are several: PNGs, manifest.csv,
montage.png) and added to that fold's training part. Validation and test parts stay real; a fold that is
resumed reuses its manifests."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from omegaconf import ListConfig
from PIL import Image

from medrun.data.images import read_image
from medrun.data.samples import Sample
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.oversample.methods import OVERSAMPLERS
from medrun.runs import resolve_inside, write_json, write_text


TRAIN_ON = ("real", "real+synthetic", "synthetic")


def _target_class(cfg, classes: list[str], labels: dict, train_ids: list[str]) -> str:
    """`oversample.minority` when set, else the rarer class of a binary training part."""
    wanted = cfg.oversample.get("minority")
    if wanted is None:
        if len(classes) != 2:
            raise MedrunError(f"oversample with {len(classes)} classes needs oversample.minority=<class> "
                              f"(one of {', '.join(classes)}) or oversample.translators")
        return classes[int(np.argmin(np.bincount([labels[i] for i in train_ids], minlength=2)))]
    return _class(str(wanted), classes, "oversample.minority")


def _class(name: str, classes: list[str], key: str) -> str:
    if name not in classes:
        raise MedrunError(f"{key}={name!r} is not a class; valid: {', '.join(classes)}")
    return name


def translations(cfg, store: SampleStore, train_ids: list[str], set_aside: list[str] = ()) -> list[dict]:
    """What a fold's training part is oversampled with, one entry per translator: its target class, source
    classes, the training ids of each side and its folder under oversampling/.

    Default: one translator from every other class (the majority side) into `oversample.minority` (MelaNet);
    `oversample.source=<class>` translates from that class only; `oversample.translators=[{source, target}, ...]`
    runs several, each in its own folder, their synthetic images pooled. A source may also be a class of
    data.translation_only: its images are the fold's `set_aside` training-part ones (its translation_sources)."""
    classes = [str(c) for c in cfg.data.classes]
    names = [*classes, *(str(c) for c in cfg.data.get("translation_only") or [])]  # by label index
    if cfg.data.get("mode") == "multilabel":
        raise MedrunError("oversample applies to single-label classification, not multi-label (data.mode)")
    labels = {i: store.samples[store.index[i]].label for i in [*train_ids, *set_aside]}
    grow = str(cfg.oversample.get("classes", "minority"))
    if grow not in ("minority", "all"):
        raise MedrunError(f"oversample.classes={grow!r}; valid: minority, all")
    if grow == "all":  # MelaNet's Augment-5x / 10x: every training image of every class gets its copies
        if cfg.oversample.name != "augment":
            raise MedrunError("oversample.classes=all applies to oversample=augment (copies of every training image)")
        minority = _target_class(cfg, classes, labels, train_ids)
        return [{"target": c, "sources": [], "source_ids": [], "folder": f"all_{c}", "skew_of": minority,
                 "target_ids": [i for i in train_ids if classes[labels[i]] == c]} for c in classes]
    listed = cfg.oversample.get("translators")
    if listed:
        pairs = [(t.get("source"), _class(str(t.get("target")), classes, "oversample.translators[].target"))
                 for t in listed]
    else:
        pairs = [(cfg.oversample.get("source"), _target_class(cfg, classes, labels, train_ids))]
    out = []
    for source, target in pairs:
        sources = [c for c in classes if c != target] if source is None else \
            [_class(str(c), names, "oversample.source") for c in (source if isinstance(source, (list, ListConfig))
                                                                   else [source])]
        if target in sources:
            raise MedrunError(f"oversample: class {target!r} is both source and target; pick another source")
        source_ids = [i for i in [*train_ids, *set_aside] if names[labels[i]] in sources]
        target_ids = [i for i in train_ids if names[labels[i]] == target]
        if not source_ids or not target_ids:
            raise MedrunError(f"a training part has no images of one side ({'+'.join(sources)}: {len(source_ids)}, "
                              f"{target}: {len(target_ids)}); oversampling needs both")
        out.append({"target": target, "sources": sources, "source_ids": source_ids, "target_ids": target_ids,
                    "folder": f"{'+'.join(sources)}_to_{target}" if listed else "", "skew_of": target})
    return out


def _read_manifest(out_dir: Path) -> list[dict]:
    with open(out_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _make(cfg, store: SampleStore, fold: dict, out_dir: Path, plan: dict, name: str) -> None:
    """Write a translator's synthetic images and its manifest.csv (last: it marks the step done)."""
    made = OVERSAMPLERS.get(name)(cfg, store, fold, out_dir, plan["source_ids"], plan["target_ids"])
    (out_dir / "synthetic").mkdir(parents=True, exist_ok=True)
    tag = f"{plan['folder']}_" if plan["folder"] else ""
    rows = []
    for n, (source, image) in enumerate(made):
        sid = f"syn{fold['fold']}_{tag}{n:05d}_{source}"
        pixels = image.squeeze(-1) if image.shape[-1] == 1 else image
        Image.fromarray(pixels).save(out_dir / "synthetic" / f"{sid}.png", compress_level=1)  # lossless, fast
        rows.append({"synthetic_id": sid, "source_id": source, "method": name, "class": plan["target"],
                     "file": f"synthetic/{sid}.png"})
    text = io.StringIO()  # csv quoting: a file name with a comma or quote stays one field
    writer = csv.DictWriter(text, fieldnames=["synthetic_id", "source_id", "method", "class", "file"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / "manifest.csv", text.getvalue())


def oversample_fold(cfg, store: SampleStore, fold: dict, fold_dir: Path) -> tuple[SampleStore, dict]:
    """The store and fold to train on: the real ones, plus the fold's synthetic images (`oversample.train_on`:
    real+synthetic; synthetic: the target class's real training images replaced; real: none made), and
    oversampling/training_set.json with the class counts and skew of what is trained on."""
    name = cfg.get("oversample", {}).get("name", "none")
    if name == "none":
        return store, fold
    if store.segmentation:
        raise MedrunError("oversample applies to classification runs; set oversample=none")
    train_on = str(cfg.oversample.get("train_on", "real+synthetic"))
    if train_on not in TRAIN_ON:
        raise MedrunError(f"oversample.train_on={train_on!r}; valid: {', '.join(TRAIN_ON)}")
    OVERSAMPLERS.get(name)  # an unknown method fails here, before any work
    classes = [str(c) for c in cfg.data.classes]
    plans = translations(cfg, store, fold["train"], fold.get("translation_sources", []))
    channels, extra = int(cfg.data.channels), []
    for plan in plans if train_on != "real" else []:
        out_dir = fold_dir / "oversampling" / plan["folder"]
        if not (out_dir / "manifest.csv").is_file():  # a resumed fold reuses what it made before
            _make(cfg, store, fold, out_dir, plan, name)
        for r in _read_manifest(out_dir):  # a manifest read back may be crafted: its files must stay inside
            # read as a real PNG is (channels, bit depth); the store resizes it with the real images
            image = read_image(resolve_inside(out_dir, r["file"], f"{out_dir / 'manifest.csv'} file"), channels, {})
            extra.append(Sample(id=r["synthetic_id"], label=classes.index(plan["target"]),
                                extra={"array": image, "source": r["source_id"]}))
    targets = {p["target"] for p in plans}
    real = [i for i in fold["train"]
            if not (train_on == "synthetic" and classes[store.samples[store.index[i]].label] in targets)]
    counts = {c: 0 for c in classes}
    for label in [store.samples[store.index[i]].label for i in real] + [s.label for s in extra]:
        counts[classes[label]] += 1
    skew_of = {p["skew_of"] for p in plans}  # the rare class(es) the skew is about
    positive = sum(counts[t] for t in skew_of)
    write_json(fold_dir / "oversampling" / "training_set.json", {
        "train_on": train_on, "targets": sorted(targets), "classes": counts, "synthetic": len(extra),
        # the thesis' skew: training images of the other classes per image of the target class
        "skew": (sum(counts.values()) - positive) / positive if positive else None,
        "translators": [{"source": p["sources"], "target": p["target"], "folder": p["folder"] or "."}
                        for p in plans]})
    return store.with_samples(extra), {**fold, "train": [*real, *(s.id for s in extra)]}
