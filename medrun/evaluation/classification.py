"""Classification metrics (scikit-learn) and their plots, from saved probabilities."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay,  # noqa: E402
                             accuracy_score, precision_recall_fscore_support, recall_score,
                             balanced_accuracy_score, brier_score_loss, cohen_kappa_score, confusion_matrix,
                             roc_auc_score)

from medrun.evaluation.decision import Decision  # noqa: E402


def _binary_counts(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """One class against the rest. A ratio with nothing to count is undefined and left out, as AUC is:
    sensitivity when the class is absent from this set, specificity when every sample has it, precision when it
    is never predicted, F1 when it is neither present nor predicted."""
    precision, sensitivity, f1, _ = precision_recall_fscore_support(y, p, average="binary", zero_division=np.nan)
    specificity = recall_score(y, p, pos_label=0, zero_division=np.nan)
    ratios = {"sensitivity": sensitivity, "specificity": specificity, "precision": precision, "f1": f1}
    return {**{name: float(v) for name, v in ratios.items() if not np.isnan(v)},
            "fn": float(confusion_matrix(y, p, labels=[0, 1])[1, 0])}


def classification_scores(y_true: np.ndarray, probs: np.ndarray, classes: list[str], multilabel: bool,
                          decision: Decision | None = None,
                          ordinal: bool = False) -> tuple[dict[str, float], list[list[int]]]:
    """Per-class and macro metrics, plus the confusion matrix (rows: truth) for single-label tasks; binary tasks
    also get `<metric>_positive`, the positive class's (`decision.positive`; its sensitivity and specificity
    differ, unlike the macro averages), and its Brier score, `brier_positive`.

    A per-class value that is undefined in this set (AUC when the class's one-vs-rest truth has a single value,
    and see `_binary_counts`) is left out, and the macro averages are over the classes that define it; scoring
    an absent class 1 (or 0) would move the average by a class the set says nothing about. Labels come from
    `decision` (argmax, 0.5 per label when multi-label, without one). `ordinal` (classes in order, e.g.
    retinopathy grades) adds the quadratic weighted kappa, `kappa_quadratic`.
    """
    pred = (decision or Decision()).labels(probs, multilabel)
    n = len(classes)
    onehot_true = y_true.astype(int) if multilabel else np.eye(n, dtype=int)[y_true]
    onehot_pred = pred if multilabel else np.eye(n, dtype=int)[pred]
    out: dict[str, float] = {}
    if multilabel:
        out["accuracy"] = float((onehot_true == onehot_pred).mean())  # label-wise
        out["subset_accuracy"] = float(accuracy_score(onehot_true, onehot_pred))
    else:
        out["accuracy"] = float(accuracy_score(y_true, pred))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, pred)) if len(set(y_true)) > 1 else out["accuracy"]
        if ordinal and len(set(y_true) | set(pred)) > 1:  # one grade everywhere: kappa is undefined
            out["kappa_quadratic"] = float(cohen_kappa_score(y_true, pred, labels=list(range(n)), weights="quadratic"))
    per_class = []
    for k, name in enumerate(classes):
        m = _binary_counts(onehot_true[:, k], onehot_pred[:, k])
        if len(set(onehot_true[:, k])) == 2:
            m["auc"] = float(roc_auc_score(onehot_true[:, k], probs[:, k]))
        per_class.append(m)
        for key, v in m.items():
            out[f"{key}_{name}"] = v
    if n == 2 and not multilabel:  # binary: the positive class's scores, as binary papers report them
        positive = (decision or Decision()).positive
        out.update({f"{key}_positive": v for key, v in per_class[positive].items() if key != "fn"})
        # the mean squared error of the positive class's probability: calibration and separation in one number
        out["brier_positive"] = float(brier_score_loss(onehot_true[:, positive], probs[:, positive]))
    for key in ("sensitivity", "specificity", "precision", "f1", "auc"):
        vals = [m[key] for m in per_class if key in m]
        if vals:
            out[f"{key}_macro"] = float(np.mean(vals))
    out["fn_total"] = float(sum(m["fn"] for m in per_class)) if multilabel else float((pred != y_true).sum())
    cm = [] if multilabel else confusion_matrix(y_true, pred, labels=list(range(n))).tolist()
    return out, cm


def balanced_subset_scores(y_true: np.ndarray, pred: np.ndarray, per_class: int, repeats: int,
                           seed: int = 0) -> dict[str, float]:
    """Macro precision, recall and F-score on `repeats` class-balanced draws of `per_class` images per class
    (fewer when a class has fewer), averaged over the draws: Corizzo et al.'s 50 + 50 test splits, three times."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y_true)
    take = min(per_class, *(int((y_true == c).sum()) for c in classes))
    draws = []
    for _ in range(repeats):
        idx = np.concatenate([rng.choice(np.flatnonzero(y_true == c), take, replace=False) for c in classes])
        draws.append(precision_recall_fscore_support(y_true[idx], pred[idx], average="macro", zero_division=0.0)[:3])
    precision, recall, f1 = np.mean(draws, axis=0)
    return {"balanced_precision_macro": float(precision), "balanced_recall_macro": float(recall),
            "balanced_f1_macro": float(f1), "balanced_per_class": float(take)}


def draw_per_class(display, y_true: np.ndarray, probs: np.ndarray, classes: list[str], multilabel: bool, ax,
                   positive: int = 1) -> None:
    """One curve of a scikit-learn display (ROC, precision-recall, calibration) per class whose two outcomes both
    occur; binary single-label: the positive class (index `positive`) only."""
    onehot = y_true.astype(int) if multilabel else np.eye(len(classes), dtype=int)[y_true]
    for k, name in enumerate(classes):
        if len(set(onehot[:, k])) == 2 and (len(classes) > 2 or multilabel or k == positive):
            display.from_predictions(onehot[:, k], probs[:, k], name=name, ax=ax)


def save_plots(y_true: np.ndarray, probs: np.ndarray, classes: list[str], multilabel: bool, folder: Path,
               prefix: str = "", decision: Decision | None = None) -> list[Path]:
    """ROC curves (one per class with both outcomes present) and, single-label, the confusion matrix."""
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_per_class(RocCurveDisplay, y_true, probs, classes, multilabel, ax, (decision or Decision()).positive)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_title(f"ROC {prefix}".strip())
    paths = [folder / f"{prefix}roc.png"]
    fig.savefig(paths[0], dpi=100, bbox_inches="tight")
    plt.close(fig)
    if not multilabel:
        pred = (decision or Decision()).labels(probs, multilabel)
        disp = ConfusionMatrixDisplay.from_predictions(y_true, pred, labels=list(range(len(classes))),
                                                       display_labels=classes, colorbar=False)
        disp.ax_.set_title(f"confusion matrix {prefix}".strip())
        paths.append(folder / f"{prefix}confusion_matrix.png")
        disp.figure_.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(disp.figure_)
    return paths


def save_curves(y_true: np.ndarray, probs: np.ndarray, classes: list[str], multilabel: bool, folder: Path,
                positive: int = 1) -> None:
    """ROC and precision-recall curves, one line per class (the positive class when binary)."""
    for name, display in (("roc", RocCurveDisplay), ("precision_recall", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(5, 5))
        draw_per_class(display, y_true, probs, classes, multilabel, ax, positive)
        fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
