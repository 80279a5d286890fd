"""Classification from a CSV: an image column plus a class column, or one-hot columns (multi-label).

Also the DICOM interface: images may be .dcm files, and `group_from_dicom` groups splits by the
files' PatientID, which stays in memory (group names are pseudonyms).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from medrun.data.dicom import patient_key
from medrun.data.labelled import class_index, labelled_dataset
from medrun.data.samples import READERS, Sample, problem
from medrun.errors import MedrunError


def _rows(cfg, path: Path, key: str = "data.csv") -> tuple[list[str], list[dict]]:
    """Rows as dicts (data.columns names the fields of a CSV without a header line), names and values without
    surrounding spaces ("image, label" names a column "label"), labels spelled as data.label_aliases says
    (ISIC-2016's test CSV writes 0.0 / 1.0 for benign / malignant)."""
    if not path.is_file():
        raise MedrunError(f"{key}={path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM from Excel is not a column name
            reader = csv.DictReader(f, fieldnames=None if cfg.get("header", True) else list(cfg.columns))
            rows = [{_strip(k): _strip(v) for k, v in r.items()} for r in reader]
            columns = [_strip(c) for c in reader.fieldnames or []]
    except UnicodeDecodeError as e:
        raise MedrunError(f"{key}={path} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV") from None
    aliases = {str(k): str(v) for k, v in (cfg.get("label_aliases") or {}).items()}
    column = cfg.get("label_column")
    if aliases and column:
        rows = [{**r, column: aliases.get(r.get(column), r.get(column))} for r in rows]
    return columns, rows


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _need(columns: list[str], name: str, key: str, path: Path) -> None:
    if name not in columns:
        raise MedrunError(f"{path}: no column {name!r} ({key}); columns are {', '.join(columns)}")


@READERS.register("csv")
def read_csv_table(cfg):
    path = Path(str(cfg.csv)).expanduser() if cfg.get("csv") else None
    if path is None:
        raise MedrunError("data.csv is not set: pass data.csv=/path/to/labels.csv")
    if not cfg.get("header", True) and not cfg.get("columns"):
        raise MedrunError("data.header=false needs data.columns, the names of the CSV's columns")
    columns, rows = _rows(cfg, path)
    image_dir = Path(str(cfg.root)).expanduser() if cfg.get("root") else path.parent
    if cfg.get("image_dir"):
        image_dir = image_dir / str(cfg.image_dir)
    _need(columns, cfg.image_column, "data.image_column", path)
    one_hot = list(cfg.get("label_columns") or [])
    for c in one_hot or [cfg.label_column]:
        _need(columns, c, "data.label_columns" if one_hot else "data.label_column", path)
    if cfg.get("group_column"):
        _need(columns, cfg.group_column, "data.group_column", path)

    hot = index = None
    if one_hot:
        classes = [str(c) for c in one_hot]
        hot = [[_one_hot(r[c], c, n, cfg, path) for c in one_hot] for n, r in enumerate(rows)]
        multilabel = cfg.get("mode") == "multilabel" or any(sum(h) != 1 for h in hot)
    else:
        classes = [str(c) for c in cfg.classes] if cfg.get("classes") else \
            sorted({r[cfg.label_column] for r in rows} - {"", None})
        index = class_index(classes)
        _check_labels(cfg, rows, index, classes, path)
        multilabel = False

    patients: dict = {}
    samples = _samples(cfg, path, rows, image_dir, hot, multilabel, index, patients, subset=None)
    if cfg.get("test_csv"):  # a fixed test set (ISIC-2016's official test images): holdout scores it
        if one_hot:
            raise MedrunError("data.test_csv works with a label column, not one-hot data.label_columns")
        test_path = Path(str(cfg.test_csv)).expanduser()
        test_columns, test_rows = _rows(cfg, test_path, "data.test_csv")
        _need(test_columns, cfg.image_column, "data.image_column", test_path)
        _check_labels(cfg, test_rows, index, classes, test_path)
        test_dir = Path(str(cfg.test_image_dir)).expanduser() if cfg.get("test_image_dir") else test_path.parent
        test = _samples(cfg, test_path, test_rows, test_dir, None, False, index, patients, subset="test")
        shared = sorted({s.id for s in test} & {s.id for s in samples})
        if shared:
            raise MedrunError(f"{test_path} lists {len(shared)} image(s) that data.csv lists too ({', '.join(shared[:3])}"
                              f"{' ...' if len(shared) > 3 else ''}): a test set must not overlap the training images")
        samples += test
    return labelled_dataset(samples, cfg, classes, multilabel)


def _row_number(cfg, n: int) -> int:
    """The file's line number of row `n` (0-based, after the header)."""
    return n + 2 - (not cfg.get("header", True))


def _one_hot(value, column: str, n: int, cfg, path: Path) -> float:
    """A one-hot cell: 0 or 1 (an empty cell is 0)."""
    try:
        v = float(value or 0)
    except ValueError:
        v = None
    if v not in (0.0, 1.0):
        raise MedrunError(f"{path} row {_row_number(cfg, n)}: {value!r} in column {column!r} (data.label_columns); "
                          "one-hot columns hold 0 or 1 (an empty cell is 0): map other values, e.g. uncertain "
                          "labels, to 0 or 1 in the CSV")
    return v


def _check_labels(cfg, rows: list[dict], index: dict, classes: list[str], path: Path) -> None:
    unknown = sorted({r[cfg.label_column] for r in rows} - set(index) - {"", None})
    if unknown:
        raise MedrunError(f"{path}: labels {unknown[:5]} in column {cfg.label_column!r} are not in data.classes {classes}")


def _samples(cfg, path: Path, rows: list[dict], image_dir: Path, hot, multilabel: bool, index, patients: dict,
             subset: str | None) -> list[Sample]:
    """The samples of a CSV's rows; a row naming a missing file or a path outside image_dir is a problem."""
    samples = []
    base = Path(os.path.normpath(image_dir.absolute()))
    suffix = cfg.get("image_suffix") or ""
    for n, r in enumerate(rows):
        row = _row_number(cfg, n)
        # Lexical check (symlinks inside the folder stay allowed): no absolute paths, no escaping with '..'.
        image = Path(os.path.normpath(base / f"{r[cfg.image_column]}{suffix}"))
        if not image.is_relative_to(base):
            problem(f"{path} row {row} names {r[cfg.image_column]!r}, which lies outside the image folder {base}; "
                    "image paths must be relative to data.root (or data.image_dir)")
            continue
        if not image.is_file():
            problem(f"{path} row {row} names {image}, which does not exist; fix the CSV or data.root")
            continue
        group = r[cfg.group_column] if cfg.get("group_column") else None
        if cfg.get("group_from_dicom"):
            key = patient_key(image)
            group = patients.setdefault(key, f"patient_{len(patients):04d}")  # pseudonym, not the tag
        if hot is not None:
            label = None if multilabel else hot[n].index(1.0)
            extra = {"targets": hot[n]}
        elif r[cfg.label_column] in ("", None):
            problem(f"{path} row {row} has no label in column {cfg.label_column!r} (data.label_column); label it "
                    "or remove the row")
            continue
        else:
            label, extra = index[r[cfg.label_column]], {}
        samples.append(Sample(id=image.stem, image=image, label=label, group=group, extra=extra, subset=subset))
    return samples
