"""Paper value vs measured value: signed difference, spread, tolerance and Welch's t-test from summary statistics."""
from __future__ import annotations

import math

from scipy.stats import ttest_ind, ttest_ind_from_stats, ttest_rel


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def compare_values(paper: float | None, paper_std: float | None, paper_n: int | None,
                   ours: float, ours_std: float, ours_n: int, tolerance: dict, paper_std_form: str = "sample") -> dict:
    """Both sides' numbers and how they differ; fields that need a missing paper value are None, never NaN.

    `difference` is ours - paper; `within_spread` asks whether ours lies in paper ± paper std; `within_tolerance`
    applies the table's absolute or relative bar (MLPerf-style); `welch_p` is the two-sided p-value of Welch's
    t-test from the two means, sample stds and ns (None when either n < 2 or both stds are 0). A paper whose std is
    the population form (`paper_std_form="population"`: numpy's np.std, ddof=0) has it turned into the sample form,
    x sqrt(n / (n - 1)), for the test; the spread check uses the published value as it stands.
    """
    out = {"paper": paper, "paper_std": paper_std, "paper_n": paper_n,
           "ours": float(ours), "ours_std": float(ours_std), "ours_n": int(ours_n),
           "difference": None, "within_spread": None, "within_tolerance": None, "welch_p": None}
    if paper is None:
        return out
    diff = float(ours) - paper
    out["difference"] = diff
    if paper_std is not None:
        out["within_spread"] = abs(diff) <= paper_std
    if tolerance:
        bar = tolerance.get("absolute", abs(paper) * tolerance.get("relative", 0.0))
        out["within_tolerance"] = abs(diff) <= bar
    if paper_std is not None and paper_n and paper_n > 1 and ours_n > 1 and (paper_std > 0 or ours_std > 0):
        sample_std = paper_std * math.sqrt(paper_n / (paper_n - 1)) if paper_std_form == "population" else paper_std
        out["welch_p"] = _finite(ttest_ind_from_stats(ours, ours_std, ours_n, paper, sample_std, paper_n,
                                                      equal_var=False).pvalue)
    return out


def paired_comparison(base: list[float], improved: list[float]) -> dict:
    """Two methods scored on the same test parts, part by part: in how many `improved` is higher, the mean of the
    differences and the two-sided paired t-test's p (None for fewer than 2 pairs or identical differences)."""
    diffs = [b - a for a, b in zip(base, improved)]
    p = _finite(ttest_rel(improved, base).pvalue) if len(diffs) > 1 and len(set(diffs)) > 1 else None
    return {"n": len(diffs), "better": sum(d > 0 for d in diffs), "mean_difference": sum(diffs) / len(diffs),
            "paired_t_p": p}


def unpaired_comparison(base: list[float], improved: list[float]) -> dict:
    """Two methods' repeated trainings scored on one shared test part: the k-th trainings do not pair, so the
    pairs of trainings in which `improved` is higher (of all base x improved pairs), the difference of the means
    and Welch's two-sided t-test's p (None for fewer than 2 trainings a side or no spread at all)."""
    better = sum(i > b for b in base for i in improved)
    spread = len(set(base)) > 1 or len(set(improved)) > 1
    p = _finite(ttest_ind(improved, base, equal_var=False).pvalue) if min(len(base), len(improved)) > 1 and spread \
        else None
    return {"pairs": len(base) * len(improved), "better": better,
            "mean_difference": sum(improved) / len(improved) - sum(base) / len(base), "welch_p": p}
