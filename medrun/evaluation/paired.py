"""Paired tests of two runs on the same held-out images (`medrun compare`): the Wilcoxon signed-rank test on
per-image Dice (segmentation), the exact McNemar test (a binomial test on the discordant images) on whether
each image is classified correctly (classification). Both from scipy.stats."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, wilcoxon

from medrun.runs import fold_folder

# the per-image file a finished fold leaves, and the column compared
PER_IMAGE = {"dice": ("predictions/per_image.csv", "dice"), "correct": ("predictions.csv", "correct")}


def held_out_values(run_dir: Path, splits: dict) -> tuple[str, dict[str, float]] | None:
    """(kind, {image id: value}) over every fold's test part: per-image Dice or classification correctness; None
    when the folds left neither file (or files without the column, from older versions), or when an image is held
    out more than once (a repeated protocol), since its values would then not be independent pairs."""
    for kind, (name, column) in PER_IMAGE.items():
        paths = [fold_folder(run_dir, f["fold"]) / name for f in splits["folds"]]
        if all(p.is_file() for p in paths):
            rows = [(r["id"], r.get(column)) for p in paths for r in csv.DictReader(p.read_text().splitlines())]
            values = {i: float(v) for i, v in rows if v not in (None, "")}
            return (kind, values) if len(values) == len(rows) else None
    return None


def paired_test(kind: str, first: dict[str, float], other: dict[str, float]) -> dict:
    """`other` against `first` on the images both scored: n, the mean difference (Dice, or accuracy), p."""
    ids = sorted(set(first) & set(other))
    a, b = np.array([first[i] for i in ids]), np.array([other[i] for i in ids])
    if kind == "dice":
        p = float(wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
        return {"test": "Wilcoxon signed-rank, per-image Dice", "n": len(ids), "difference": float((b - a).mean()),
                "p": p}
    only_first, only_other = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    discordant = only_first + only_other
    p = float(binomtest(only_other, discordant, 0.5).pvalue) if discordant else 1.0
    return {"test": "exact McNemar, correct per image", "n": len(ids), "difference": float((b - a).mean()),
            "p": p, "discordant": [only_first, only_other]}
