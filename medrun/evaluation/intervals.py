"""Bootstrap confidence intervals of eval's metrics (scipy.stats.bootstrap, percentile method)."""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from scipy.stats import DegenerateDataWarning, bootstrap

from medrun.evaluation.metrics import scores


def bootstrap_intervals(metrics_of: Callable[[np.ndarray], dict], strata: list[np.ndarray], names: list[str],
                        level: float = 0.95, resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """{metric: [low, high]}: percentile intervals of `metrics_of(indices)` over `resamples` resamples of the
    evaluated samples. Each stratum (an index array, e.g. the images of one class) is resampled on its own, so
    every resample keeps the class counts, as pROC's stratified bootstrap for AUC; one stratum when any holds
    fewer than two samples. A metric that some resample leaves undefined gets no interval, and so does every
    metric of a single sample."""
    if any(len(s) < 2 for s in strata):
        strata = [np.concatenate(strata)]
    if len(strata[0]) < 2:
        return {}

    def statistic(*parts):
        metrics = metrics_of(np.concatenate(parts).astype(int))
        return np.array([metrics.get(n, np.nan) for n in names], dtype=float)

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # an undefined metric: no interval, said below
        low, high = bootstrap(tuple(strata), statistic, paired=False, vectorized=False, n_resamples=resamples,
                              confidence_level=level, method="percentile", random_state=seed).confidence_interval
    return {n: [float(lo), float(hi)] for n, lo, hi in zip(names, np.atleast_1d(low), np.atleast_1d(high))
            if np.isfinite(lo) and np.isfinite(hi)}


def class_strata(target: np.ndarray, multilabel: bool) -> list[np.ndarray]:
    """The indices of each class present (single-label), or all indices as one stratum (multi-label)."""
    if multilabel:
        return [np.arange(len(target))]
    return [np.flatnonzero(target == c) for c in np.unique(target)]


def image_resampler(counts, class_names: list[str], empty_score: float, absent: str):
    """eval's `resample` for masks: (the scores of resampled images from their (N, C) confusion counts, one
    stratum of every image)."""
    return (lambda idx: scores(*(c[torch.as_tensor(idx)] for c in counts), class_names, empty_score, absent),
            [np.arange(len(counts[0]))])
