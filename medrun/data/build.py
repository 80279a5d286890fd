"""From a `data` config to what training needs: the listed dataset with its label facts filled into the
config, the (cached) sample store, and the folds of the configured protocol."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import warnings
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, open_dict

from medrun.config import override_key
from medrun.config_values import positive_index
from medrun.data import build_dataset
from medrun.data.samples import LOADERS, Dataset
from medrun.data.splits import load_splits, make_splits, set_aside
from medrun.data.images import pixel_digest
from medrun.data.disk_cache import cache_key, cache_root, listing_key, open_or_build, read_listing, write_listing
from medrun.data.store import SampleStore, decode_workers
from medrun.errors import MedrunError

log = logging.getLogger("medrun")

ID_KEY_ENV = "MEDRUN_ID_KEY_FILE"


def fill_labels(cfg: DictConfig, dataset: Dataset) -> None:
    """Classification: take class names and mode (multi-class / multi-label) from the data unless set, and check
    data.positive and task.threshold against them."""
    if dataset.kind != "classification":
        return
    with open_dict(cfg):
        cfg.data.classes = list(cfg.data.get("classes") or dataset.classes)
        if cfg.data.get("mode") in (None, "auto"):
            cfg.data.mode = "multilabel" if dataset.multilabel else "multiclass"
    positive_index(cfg.data)  # a data.positive that names no class fails here, before a run folder exists
    n, multilabel = len(cfg.data.classes), cfg.data.mode == "multilabel"
    if cfg.task.get("threshold") is not None and (n != 2 or multilabel):
        raise MedrunError(f"task.threshold={cfg.task.threshold} applies to two-class single-label data (here "
                          f"{n} {cfg.data.mode} classes: " + ("task.thresholds takes one per label)" if multilabel
                                                              else "argmax decides)"))
    thresholds = cfg.task.get("thresholds")
    if thresholds is not None and (not multilabel or len(thresholds) != n):
        raise MedrunError(f"task.thresholds={list(thresholds)} needs one threshold per label of multi-label data "
                          f"(here {n} {cfg.data.mode} classes" + (": task.threshold for two classes)" if n == 2 and
                                                                   not multilabel else ")"))


def id_key() -> bytes:
    """The secret key of anonymised sample ids; kept outside every run folder (created on first use)."""
    path = Path(os.environ.get(ID_KEY_ENV) or Path.home() / ".config" / "medrun" / "id_key").expanduser()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    key = path.read_text().strip()
    if len(key) < 32:
        raise MedrunError(f"{path} ({ID_KEY_ENV}) holds no usable key; delete it to make a new one")
    return key.encode()


def anonymous_id(name: str, key: bytes | None = None) -> str:
    """The keyed hash (HMAC-SHA256) that stands for a file-name id: stable for one key, not reversible without it."""
    return "s" + hmac.new(key or id_key(), name.encode(), hashlib.sha256).hexdigest()[:16]


def anonymize(dataset: Dataset) -> Dataset:
    """Replace file-name ids with their keyed hashes (`anonymous_id`)."""
    key = id_key()
    return replace(dataset, samples=[replace(s, id=anonymous_id(s.id, key)) for s in dataset.samples])


def _stored_listing(data: DictConfig, cache_dir) -> Dataset | None:
    """With data.cache=disk, a reader in LOADERS lists a dataset once: later runs on unchanged files read the
    stored listing (not with data.anonymize_ids: it holds file paths)."""
    if data.get("cache") != "disk" or data.get("anonymize_ids") or str(data.reader) not in LOADERS.names():
        return None
    key = listing_key(data)
    if key is None:
        return None
    root = cache_root(cache_dir)
    dataset = read_listing(root, key, LOADERS.get(str(data.reader))(data))
    if dataset is None:
        dataset = build_dataset(data)
        write_listing(root, key, dataset)
    return dataset


def reading_config(data: DictConfig) -> DictConfig:
    """`data` as the reader sees it: with data.translation_only, its classes follow data.classes."""
    extra = [str(c) for c in data.get("translation_only") or []]
    if not extra:
        return data
    classes = [str(c) for c in data.get("classes") or []]
    if not classes:
        raise MedrunError("data.translation_only needs data.classes: name the classes the classifier predicts")
    if data.get("mode") == "multilabel" or data.get("label_columns"):
        raise MedrunError("data.translation_only applies to single-label classification")
    both = sorted(set(extra) & set(classes))
    if both:
        raise MedrunError(f"data.translation_only lists {both[0]!r}, which is also in data.classes; a class is "
                          "either predicted or used only for translation")
    data = data.copy()
    with open_dict(data):
        data.classes = [*classes, *extra]
    return data


def list_dataset(cfg: DictConfig) -> Dataset:
    """List the samples of `cfg.data` (ids anonymised when asked) and fill the label facts (classes, mode) into
    the config: the one place they come from. Classes in data.translation_only are read too, labelled after
    data.classes."""
    data = reading_config(cfg.data)
    dataset = _stored_listing(data, cfg.paths.get("cache_dir")) or build_dataset(data)
    if cfg.data.get("anonymize_ids"):
        dataset = anonymize(dataset)
    fill_labels(cfg, dataset)
    for k, name in enumerate(cfg.data.get("translation_only") or [], start=len(cfg.data.get("classes") or [])):
        if not any(s.label == k for s in dataset.samples):
            raise MedrunError(f"data.translation_only: no image of class {name!r} in data.root={cfg.data.root} "
                              f"(reader {cfg.data.reader}); check the class name")
    return dataset


def build_store(cfg: DictConfig, preload: bool = True, dataset: Dataset | None = None) -> SampleStore:
    """List the dataset and (with `preload`) decode every sample, so bad files fail before training.

    `data.cache=disk` reuses the persistent cache of the same data and options, or (with `preload`) builds it;
    without `preload` a missing cache is not built and samples decode when read. `dataset`: already listed
    (`list_dataset`).
    """
    dataset = dataset or list_dataset(cfg)
    pad = bool(cfg.data.get("pad_to_square"))
    if pad and dataset.kind == "segmentation":
        raise MedrunError("data.pad_to_square applies to classification; segmentation masks are resized as they are")
    store = SampleStore(dataset, cfg.data.image_size, cache=cfg.data.get("cache", "memory"), pad=pad)
    workers = decode_workers(cfg.data.get("decode_workers", "auto"), len(store))
    if store.mode == "disk":
        if not len(store):
            raise MedrunError(f"data.cache=disk: data.root={cfg.data.root} has no samples to cache")
        arrays = open_or_build(cache_root(cfg.paths.get("cache_dir")), cache_key(cfg.data, dataset, store.size, pad),
                               len(store), lambda: store.decode(0),
                               lambda paths: store.fill(paths, list(range(1, len(store))), workers),
                               {"reader": str(cfg.data.reader), "image_size": list(store.size)}, build=preload)
        if arrays is not None:
            store.attach(arrays)
    if preload:
        store.preload(workers)  # off: decodes to validate and keeps nothing; disk: only what the arrays lack
    return store


SPLIT_SETTINGS = ("folds", "repeats", "test_fraction", "val_fraction", "split_seed", "grouped", "contiguous")


def check_split_settings(cfg: DictConfig, samples) -> None:
    """A split setting given on the command line that the split would ignore fails in one line: the folds of a
    cv.splits_file, a holdout's fixed test or validation set (MedMNIST, ISIC-2016's test set)."""
    given = {override_key(o).removeprefix("cv."): o for o in cfg.get("overrides") or []
             if override_key(o).startswith("cv.")}
    if cfg.cv.get("splits_file"):
        for key in SPLIT_SETTINGS:
            if key in given:
                raise MedrunError(f"{given[key]} has no effect: the folds come from cv.splits_file="
                                  f"{cfg.cv.splits_file}; remove one of the two")
        return
    fixed = cfg.cv.name == "holdout" and cfg.cv.get("use_fixed_test", True)
    for key, subset in (("test_fraction", "test"), ("val_fraction", "val")):
        if fixed and key in given and any(s.subset == subset for s in samples):
            raise MedrunError(f"{given[key]} has no effect: the data has a fixed {subset} set, which cv=holdout uses; "
                              "add cv.use_fixed_test=false to hold out a fraction of the data instead")


def build_splits(cfg: DictConfig, store: SampleStore) -> dict:
    """The run's folds: a given splits file, or the protocol `cv.name` made from the samples; images of
    data.translation_only classes set aside (see set_aside)."""
    check_split_settings(cfg, store.samples)
    if cfg.cv.get("splits_file"):
        splits = load_splits(cfg.cv.splits_file, store.samples)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            splits = make_splits(store.samples, cfg.cv, int(cfg.seed), ordered=store.dataset.ordered)
        for w in caught:  # still shown, and kept: the run's summary and reports carry them (splits.json)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if caught:
            splits = {**splits, "data_warnings": list(dict.fromkeys(str(w.message) for w in caught))}
    if cfg.data.get("translation_only"):
        splits = set_aside(splits, store.samples, len(cfg.data.classes))
    copies = copies_across_parts(store, splits)
    if copies:
        log.warning("%s; splits.json lists them (copies_across_parts), `medrun data check` every set of copies: "
                    "remove them or give each set one group", copies_note(copies))
        return {**splits, "copies_across_parts": copies}
    return splits


def copies_across_parts(store: SampleStore, splits: dict) -> dict[str, list[str]]:
    """{fold: test ids} of the test images whose pixels, as the model sees them, equal an image of the fold's
    training or validation part under another id: copies a split put on both sides. Only for a store that holds
    every image (data.cache=memory or disk); without one it would have to decode them all again."""
    if not all(store.has(i) for i in range(len(store))):
        return {}
    digest = [pixel_digest(store.get(i)[0]) for i in range(len(store))]
    seen_parts = ("train",) if splits.get("test_used_for_model_selection") else ("train", "val")
    copies = {}
    for fold in splits["folds"]:
        seen = {digest[i] for part in seen_parts for i in store.indices(fold[part])}
        copied = [sid for sid, i in zip(fold["test"], store.indices(fold["test"])) if digest[i] in seen]
        if copied:
            copies[str(fold["fold"])] = copied
    return copies


def copies_note(copies: dict[str, list[str]]) -> str:
    counts = ", ".join(f"{len(ids)} in fold {k}" for k, ids in copies.items())
    return (f"test images identical to a training or validation image under another id ({counts}): their test "
            "scores are optimistic")
