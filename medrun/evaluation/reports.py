"""Fold aggregation and the mean ± std tables (cv_summary.json, summary.md, terminal)."""
from __future__ import annotations

import numpy as np
from rich.markup import escape
from rich.table import Table

HEADLINE = ("dice", "jaccard", "dice_micro", "jaccard_micro", "precision", "recall", "specificity",
            "accuracy", "balanced_accuracy", "kappa_quadratic", "auc_macro", "f1_macro", "sensitivity_macro",
            "specificity_macro", "precision_macro", "fn_total")


def md(value) -> str:
    """A value from data (a class, run or experiment name, an override) as inert markdown table text: `|` would
    split the cell, a line break the row, and `<`, `>`, `&` would be HTML in a markdown viewer."""
    text = " ".join(str(value).split())
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\\", "\\\\")
            .replace("|", "\\|"))


def aggregate(experiment: str, protocol: str, folds: list[dict], note: str | None = None) -> dict:
    """cv_summary.json content: per-fold metrics, their mean and std (sample std; 0 for one fold) over the folds
    that define each, and `defined_in`, how many folds those were, for a metric some folds leave undefined."""
    names = list(dict.fromkeys(n for f in folds for n in f["metrics"]))  # a metric may be undefined in a fold
    values = {n: np.array([f["metrics"][n] for f in folds if n in f["metrics"]], dtype=float) for n in names}
    out = {"experiment": experiment, "protocol": protocol}
    if note:
        out["note"] = note
    out["folds"] = folds
    out["mean"] = {n: float(v.mean()) for n, v in values.items()}
    out["std"] = {n: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()}
    out["defined_in"] = {n: len(v) for n, v in values.items() if len(v) < len(folds)}
    repeats = sorted({f["repeat"] for f in folds if "repeat" in f})
    if len(repeats) > 1 and len(repeats) < len(folds):  # repeated k-fold: the spread of the repeats' means
        means = [aggregate(experiment, protocol, [f for f in folds if f.get("repeat") == r])["mean"] for r in repeats]
        over = {n: np.array([m[n] for m in means if n in m]) for n in names}
        out["over_repeats"] = {"n": len(repeats), "mean": {n: float(v.mean()) for n, v in over.items()},
                               "std": {n: float(v.std(ddof=1)) for n, v in over.items()}}
    return out


def mean_std(mean: float, std: float, n: int) -> str:
    """"mean ± std", or the one value when one fold (or run) gave it: its std of 0 is no spread."""
    return f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"


def cell(row: dict, name: str, folds: int) -> str:
    """Metric `name` of an aggregate (`mean`, `std`, optional `defined_in`) over `folds` folds, as a table cell:
    "mean ± std", followed by "(k of n folds)" when only k folds define it."""
    k = (row.get("defined_in") or {}).get(name, folds)
    text = mean_std(row["mean"][name], row["std"][name], k)
    return text if k == folds else f"{text} ({k} of {folds} folds)"


def _ordered(names):
    return [n for n in HEADLINE if n in names] + sorted(n for n in names if n not in HEADLINE)


def markdown(summary: dict) -> str:
    folds = summary["folds"]
    spread = "mean ± std" if len(folds) > 1 else "value"
    head = f"| metric | {spread} | " + " | ".join(f"fold {f['fold']}" for f in folds) + " |"
    rule = "|---|---|" + "---|" * len(folds)
    rows = [f"| {md(n)} | {cell(summary, n, len(folds))} | "
            + " | ".join(f"{f['metrics'][n]:.4f}" if n in f["metrics"] else "-" for f in folds) + " |" for n in _ordered(summary["mean"])]
    title = f"# {md(summary['experiment'])} ({md(summary['protocol'])}, {len(folds)} fold(s))"
    note = [f"> Note: {md(summary['note'])}.", ""] if summary.get("note") else []
    if summary.get("defined_in"):
        note += ["`-`: undefined in that fold (a class absent from its test part, or never predicted); the mean is "
                 "over the folds that define it.", ""]
    positive = [f"The `*_positive` rows are about class **{md(summary['positive_class'])}** (`data.positive`, by default "
                "the second class; the decision threshold and ROC curve follow it).", ""] \
        if summary.get("positive_class") else []
    return "\n".join([title, "", *note, *positive, head, rule, *rows, ""]) + trivial_markdown(summary)


# the columns of compare and sweep tables when the config names none (`report=`) and the runs have them:
# segmentation, then classification (MelaNet's Table 2.1 columns: AUC, sensitivity, specificity, false negatives,
# balanced accuracy), the cascade's classifier
TABLE_METRICS = ("dice", "dice_micro", "jaccard", "auc_macro", "sensitivity_positive", "specificity_positive",
                 "sensitivity_macro", "specificity_macro", "fn_total", "balanced_accuracy", "kappa_quadratic",
                 "accuracy", "classifier_auc", "auc")


def table_metrics(reported: list[str], means: list[dict]) -> list[str]:
    """The metrics a compare or sweep table shows: the configs' `report` lists, else TABLE_METRICS, of those some
    run has. Two classes: the positive class's sensitivity and specificity, not the macro pair, which are equal."""
    wanted = list(dict.fromkeys(reported)) or TABLE_METRICS
    metrics = [m for m in wanted if any(m in mean for mean in means)]
    if not reported and "sensitivity_positive" in metrics:
        metrics = [m for m in metrics if m not in ("sensitivity_macro", "specificity_macro")]
    return metrics


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric.startswith(("fn", "brier"))


# Metrics a trivial predictor can really compete on; precision, specificity or sensitivity alone are maximised by
# predicting nothing (or everything), so a trivial row "winning" them says nothing.
COMPARED = ("dice", "jaccard", "dice_micro", "jaccard_micro", "accuracy", "balanced_accuracy", "kappa_quadratic",
            "auc_macro", "f1_macro", "brier_positive", "auc_positive", "f1_positive", "auc")


def not_beaten(summary: dict, metrics=None) -> list[tuple[str, str, float, float]]:
    """(metric, trivial row, its mean, the method's mean) for each compared metric where a trivial row scores at
    least as well as the method."""
    from medrun.evaluation.trivial import best_trivial

    trivial = {name: row["mean"] for name, row in (summary.get("trivial") or {}).items()}
    out = []
    for m in [m for m in metrics or _ordered(summary["mean"]) if m in COMPARED]:
        best = best_trivial(trivial, m, not lower_is_better(m)) if m in summary["mean"] else None
        ours = summary["mean"].get(m)
        if best and (best[1] <= ours if lower_is_better(m) else best[1] >= ours):
            out.append((m, best[0], best[1], ours))
    return out


def trivial_markdown(summary: dict) -> str:
    """summary.md's section of reference rows: the trivial predictors on the same test parts."""
    trivial = summary.get("trivial")
    if not trivial:
        return ""
    names = [n for n in _ordered(summary["mean"]) if any(n in row["mean"] for row in trivial.values())]
    names = [n for n in names if n in HEADLINE or n.endswith("_positive")] or names
    lines = ["", "## Reference rows: trivial predictors (not methods)", "",
             "Scored on the same test parts with the same metric code, so the method's numbers can be read against "
             "them (an empty mask on an empty image scores 1 per image).", "",
             "| predictor | " + " | ".join(map(md, names)) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {md(name)} | " + " | ".join(cell(row, n, len(summary["folds"])) if n in row["mean"] else "-"
                                         for n in names) + " |"
              for name, row in trivial.items()]
    beaten = not_beaten(summary, names)
    lines += ["", *(f"> The method does not beat the trivial row on **{md(m)}**: {md(name)} {value:.4f} vs {ours:.4f}."
                    for m, name, value, ours in beaten)] if beaten else ["", "The method beats every trivial row."]
    return "\n".join(lines) + "\n"


def rich_table(summary: dict) -> Table:
    title = escape(f"{summary['experiment']}: {summary['protocol']}, {len(summary['folds'])} fold(s)")
    if summary.get("note"):
        title += escape(f" [{summary['note']}]")
    if summary.get("positive_class"):
        title += escape(f"\n*_positive: {summary['positive_class']} (data.positive)")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean ± std" if len(summary["folds"]) > 1 else "value", justify="right")
    for n in _ordered(summary["mean"]):
        table.add_row(escape(n), cell(summary, n, len(summary["folds"])))
    beaten = not_beaten(summary)
    if beaten:  # the reference rows live in summary.md; a method no better than one of them must not pass unseen
        table.caption = escape("not better than a trivial predictor on " +
                               ", ".join(f"{m} ({name} {value:.4f})" for m, name, value, _ in beaten) +
                               ": summary.md has the reference rows")
        table.caption_justify = "left"
    return table


POSTPROCESSING_COLUMNS = {"dice": "Dice (per image)", "dice_micro": "Dice (dataset)", "jaccard": "IoU (per image)",
                          "jaccard_micro": "IoU (dataset)", "intersection_ratio_positive": "CM (read as |P∩T|/|T|)",
                          "classifier_sensitivity": "cls. sensitivity", "classifier_specificity": "cls. specificity",
                          "classifier_auc": "cls. AUC"}


def table_over_folds(tables: list[dict]) -> dict:
    """Per-fold tables {row: {column: value}} as {row: {column: {"mean", "std", "n"}}} (sample std; 0 for one
    fold)."""
    out = {}
    for row in tables[0]:
        out[row] = {}
        for col in POSTPROCESSING_COLUMNS:
            values = np.array([t[row][col] for t in tables if col in t.get(row, {})], dtype=float)
            if values.size:
                out[row][col] = {"mean": float(values.mean()),
                                 "std": float(values.std(ddof=1)) if values.size > 1 else 0.0, "n": int(values.size)}
    return out


def table_markdown(table: dict, title: str, note: str) -> str:
    """A post-processing table (rows x Dice / IoU / classifier columns, mean ± std) as a markdown section."""
    cols = [c for c in POSTPROCESSING_COLUMNS if any(c in r for r in table.values())]
    lines = ["", f"## {title}", "", note, "",
             "| post-processing | " + " | ".join(POSTPROCESSING_COLUMNS[c] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row, values in table.items():
        lines.append(f"| {md(row)} | " + " | ".join(mean_std(values[c]["mean"], values[c]["std"], values[c].get("n", 2))
                                                if c in values else "-" for c in cols) + " |")
    return "\n".join(lines) + "\n"
