"""Cross-validation protocols as explicit sample-id splits (sklearn splitters, grouped and stratified)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import (GroupKFold, GroupShuffleSplit, KFold, StratifiedGroupKFold,
                                     StratifiedKFold, train_test_split)

from medrun.config_values import get_float, get_int
from medrun.data.samples import Sample
from medrun.errors import MedrunError
from medrun.registry import Registry

LEAK_NOTE = "test set used for model selection"


def _holdout(samples: list[Sample], fraction: float, seed: int, grouped: bool = True, for_validation: bool = False):
    """Split samples into (rest, held) with `fraction` held out; whole groups and strata stay together.

    A validation split of a training part with a single group falls back to splitting samples (with a
    warning): it only steers early stopping. A test split never does.
    """
    idx = np.arange(len(samples))
    groups = [s.group for s in samples]
    labels = [s.label for s in samples]
    if grouped and all(g is not None for g in groups) and len(set(groups)) < 2:
        if not for_validation:
            raise MedrunError(f"only {len(set(groups))} group(s) in {len(samples)} samples: cannot hold out whole "
                              "groups; use more data or fewer folds")
        warnings.warn(f"the training part holds one group only: its validation split shares that group "
                      f"({len(samples)} samples); early stopping may be optimistic")
        grouped = False
    if grouped and all(g is not None for g in groups):
        rest, held = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(idx, groups=groups))
    else:
        strat = labels if all(v is not None for v in labels) else None
        try:
            rest, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
        except ValueError as e:  # scikit-learn's reason a split by class is impossible (too few samples)
            if strat is None or not for_validation:
                key = "cv.val_fraction" if for_validation else "cv.test_fraction"
                raise MedrunError(f"cannot hold out {fraction:g} of {len(samples)} samples"
                                  f"{' by class' if strat else ''}: {e}; raise {key}, use more data, or use "
                                  "cv=kfold") from None
            # the validation part only steers early stopping: split without the classes rather than fail
            warnings.warn(f"the validation split of {len(samples)} training samples is not stratified by class: {e}")
            rest, held = train_test_split(idx, test_size=fraction, random_state=seed)
    return [samples[i] for i in sorted(rest)], [samples[i] for i in sorted(held)]


def _kfold(pool: list[Sample], cv: DictConfig, seed: int, contiguous: bool = False, offset: int = 0):
    """(rest, test) per fold; contiguous test blocks start `offset` samples into the pool (wrapping round)."""
    k = get_int(cv, "folds", minimum=2, prefix="cv.")
    groups = [s.group for s in pool]
    labels = [s.label for s in pool]
    grouped = all(g is not None for g in groups)
    stratified = all(v is not None for v in labels)
    units = len(set(groups)) if grouped else len(pool)
    if k > units:
        what = "groups (video sequences / patients)" if grouped else "samples"
        raise MedrunError(f"cv.folds={k} is more than the {units} {what} available; use cv.folds<={units}")
    if contiguous and not grouped:
        # Consecutive sections of one volume (ISBI-2012): neighbours are near-copies, so each test fold is
        # one contiguous block of slices instead of slices scattered among the training ones.
        splitter = KFold(k, shuffle=False)
        stratified = False
    elif grouped:
        splitter = (StratifiedGroupKFold(k, shuffle=True, random_state=seed) if stratified
                    else GroupKFold(k, shuffle=True, random_state=seed))
    else:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if stratified else KFold(k, shuffle=True, random_state=seed)
    idx = np.roll(np.arange(len(pool)), -offset)
    for rest, test in splitter.split(idx, labels if stratified else None, groups if grouped else None):
        yield [pool[i] for i in sorted(idx[rest])], [pool[i] for i in sorted(idx[test])]


# name -> (pool, fixed_test, cv, seed, ordered) -> ([(train, val, test), ...], test used for model selection)
PROTOCOLS: Registry = Registry("cv protocol", "cv.name")


@PROTOCOLS.register("kfold")
def _kfold_protocol(pool, fixed_test, cv, seed, ordered, repeat: int = 0):
    val_fraction = get_float(cv, "val_fraction", 0, 1, prefix="cv.")
    contiguous = cv.get("contiguous")
    contiguous = ordered if contiguous is None else bool(contiguous)
    # each repeat is a new split: reshuffled, or its contiguous blocks shifted by a part of a block
    k = get_int(cv, "folds", minimum=2, prefix="cv.")
    offset = round(repeat * len(pool) / (k * int(cv.get("repeats") or 1))) if contiguous else 0
    folds = []
    for k, (rest, test) in enumerate(_kfold(pool, cv, seed + 1000 * repeat, contiguous, offset)):
        train, val = _holdout(rest, val_fraction, seed + 1000 * repeat + k, for_validation=True)
        folds.append((train, val, test))
    return folds, False


@PROTOCOLS.register("repeated_kfold")
def _repeated_kfold_protocol(pool, fixed_test, cv, seed, ordered):
    # The Sharp U-Net text's protocol: k-fold CV conducted `repeats` times with different random splits.
    repeats = get_int(cv, "repeats", minimum=1, prefix="cv.")
    return [f for r in range(repeats) for f in _kfold_protocol(pool, fixed_test, cv, seed, ordered, r)[0]], False


@PROTOCOLS.register("holdout")
def _holdout_protocol(pool, fixed_test, cv, seed, ordered):
    fixed = bool(cv.get("use_fixed_test", True))
    fixed_val = [s for s in pool if s.subset == "val"]
    if fixed_test and fixed:
        rest, test = pool, fixed_test
    else:
        rest, test = _holdout(pool, get_float(cv, "test_fraction", 0, 1, prefix="cv."), seed)
    if fixed_val and fixed:  # e.g. MedMNIST's official validation split
        train, val = [s for s in rest if s.subset != "val"], [s for s in rest if s.subset == "val"]
    else:
        train, val = _holdout(rest, get_float(cv, "val_fraction", 0, 1, prefix="cv."), seed, for_validation=True)
    # cv.repeats > 1: trainings of the one split with seeds seed, seed+1, ... (MedMNIST v2 averages three or more)
    return [(train, val, test)] * get_int(cv, "repeats", minimum=1, prefix="cv."), False


@PROTOCOLS.register("holdout_test_as_val")
def _test_as_validation_protocol(pool, fixed_test, cv, seed, ordered):
    # The MelaNet reference code's protocol: all training images train, the fixed test set is also the
    # validation set (early stopping, checkpoint choice, learning-rate plateaus), so the numbers are optimistic.
    if not fixed_test:
        raise MedrunError("cv=holdout_test_as_val needs a dataset with a fixed test set (e.g. data.test_csv=...)")
    return [(pool, fixed_test, fixed_test)], True


@PROTOCOLS.register("repeated_holdout")
def _repeated_holdout_protocol(pool, fixed_test, cv, seed, ordered):
    # The Sharp U-Net authors' protocol: one split, trained `repeats` times; the held-out part
    # also drives early stopping, so the reported numbers are optimistic.
    train, test = _holdout(pool, get_float(cv, "test_fraction", 0, 1, prefix="cv."),
                           get_int(cv, "split_seed", prefix="cv."), grouped=bool(cv.get("grouped", False)))
    return [(train, test, test)] * get_int(cv, "repeats", minimum=1, prefix="cv."), True


def make_splits(samples: list[Sample], cv: DictConfig, seed: int, ordered: bool = False) -> dict:
    """Build the folds of protocol `cv.name`; each fold lists train, val and test sample ids.

    `ordered`: the samples are consecutive sections (the reader says so); k-fold then holds out contiguous
    blocks unless `cv.contiguous=false`.
    """
    pool = [s for s in samples if s.subset != "test"]
    fixed_test = [s for s in samples if s.subset == "test"]
    folds, leak = PROTOCOLS.get(cv.name)(pool, fixed_test, cv, seed, ordered)
    repeats = int(cv.get("repeats") or 1)
    per_repeat = max(len(folds) // repeats, 1)
    return {
        "protocol": cv.name,
        "test_used_for_model_selection": leak,
        "seed": seed,
        "folds": [{"fold": k, **({"repeat": k // per_repeat} if repeats > 1 else {}),
                   "train": _ids(tr), "val": _ids(va), "test": _ids(te)}
                  for k, (tr, va, te) in enumerate(folds)],
        "fixed_test": _ids(fixed_test),
    }


def set_aside(splits: dict, samples: list[Sample], n_classes: int) -> dict:
    """The folds without the images of classes past the first `n_classes` (data.translation_only): they are split
    with the others (so each stays on one side of a patient-level split), then each fold's training-part ones are
    listed as its `translation_sources`, and its validation and test ones dropped."""
    aside = {s.id for s in samples if s.label is not None and s.label >= n_classes}
    folds = [{**f, **{part: [i for i in f[part] if i not in aside] for part in ("train", "val", "test")},
              "translation_sources": [*f.get("translation_sources", []), *(i for i in f["train"] if i in aside)]}
             for f in splits["folds"]]
    return {**splits, "folds": folds, "fixed_test": [i for i in splits.get("fixed_test", []) if i not in aside]}


def _ids(samples: list[Sample]) -> list[str]:
    return [s.id for s in samples]


def load_splits(path: str | Path, samples: list[Sample]) -> dict:
    """Read a splits.json and check that it names only samples of this dataset."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
        folds = splits["folds"]
    except FileNotFoundError:
        raise MedrunError(f"cv.splits_file={path} does not exist") from None
    except (ValueError, KeyError, TypeError) as e:
        raise MedrunError(f"cv.splits_file={path} is not a medrun splits.json ({e})") from None
    known = {s.id for s in samples}
    for f in folds:
        for part in ("train", "val", "test"):
            unknown = sorted(set(f.get(part, [])) - known)
            if unknown:
                raise MedrunError(f"{path}: fold {f.get('fold')} {part} names samples not in the dataset, "
                                  f"e.g. {unknown[:3]}; was it made for another data.root?")
        # a test image in the same fold's training or validation part would be scored after being learnt
        # (a protocol that validates on its test part says so with test_used_for_model_selection)
        test = set(f.get("test", []))
        for part in ("train", "val"):
            if part == "val" and splits.get("test_used_for_model_selection"):
                continue
            shared = sorted(test & set(f.get(part, [])))
            if shared:
                raise MedrunError(f"{path}: fold {f.get('fold')} has {len(shared)} test sample(s) in its {part} part, "
                                  f"e.g. {shared[:3]}; fix the file so that no test id is also a {part} id")
        # a validation image that is also trained on makes early stopping and checkpoint choice optimistic
        shared = sorted(set(f.get("train", [])) & set(f.get("val", [])))
        if shared:
            raise MedrunError(f"{path}: fold {f.get('fold')} has {len(shared)} sample(s) in both its train and val "
                              f"parts, e.g. {shared[:3]}; fix the file so that no validation id is also a training id")
    return splits
