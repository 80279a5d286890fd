"""report.html: one self-contained page per result (a run, compare, reproduce, a sweep).

The tables are the result's own markdown (summary.md, compare.md, report.md, multirun_summary.md) rendered
with Python-Markdown; the figures are drawn here with matplotlib or are the PNGs medrun already wrote (eval,
explain, oversampling), embedded as data URIs. The page requests nothing from the network and runs no script.
"""
from __future__ import annotations

import base64
import csv
import io
import logging
import re
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from markdown import Markdown  # noqa: E402

from medrun.evaluation.decision import Decision  # noqa: E402
from medrun.runs import read_json, write_text  # noqa: E402

log = logging.getLogger("medrun")
MONTAGE = "report_montage.png"  # a run's worst / median / best held-out images, kept for later refreshes
_env = Environment(loader=PackageLoader("medrun", "templates"), autoescape=select_autoescape(["html", "j2"]))


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _figure(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return _uri(buf.getvalue())


def _pngs(folder: Path, pattern: str = "*.png") -> list[tuple[str, str]]:
    return [(p.stem.replace("_", " "), _uri(p.read_bytes())) for p in sorted(folder.glob(pattern)) if p.is_file()]


def _md(path: Path) -> str:
    """A medrun markdown file as HTML; its first heading is the page's or section's title, so it is dropped.
    Raw HTML in it is shown as text, never kept as markup: a class or run name from data stays inert even if a
    writer forgot to escape it."""
    text = path.read_text() if path.is_file() else ""
    converter = Markdown(extensions=["tables"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter.convert(re.sub(r"\A# .*\n", "", text))


def section(title: str, html: str = "", figures=(), note: str = "") -> dict:
    return {"title": title, "html": html, "figures": [(c, uri) for c, uri in figures if uri], "note": note}


def write_page(kind: str, *args) -> Path | None:
    """The report of `kind` (run, compare, reproduce, sweep); a failure is logged, never lost results: the
    tables and JSON it draws from are written before it."""
    try:
        return {"run": run_report, "compare": compare_report, "reproduce": reproduce_report,
                "sweep": sweep_report}[kind](*args)
    except Exception as e:  # noqa: BLE001 - the page is a view of results already on disk
        log.warning("report.html not written (%s: %s)", type(e).__name__, e)
        return None


def render(path: Path, title: str, subtitle: str, sections: list[dict]) -> Path:
    """Write the page (replacing an earlier report.html of the same result)."""
    html = _env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, sections=[s for s in sections if s["html"] or s["figures"] or s["note"]],
        made=time.strftime("%Y-%m-%d %H:%M"))
    write_text(path, html)
    return path


# ---- a run ------------------------------------------------------------------------------------------------

def _epoch_rows(path: Path) -> dict[str, dict[int, float]]:
    """metrics.csv as column -> epoch -> mean value (steps of one epoch averaged). Rows without an epoch (the
    learning rate, logged as an epoch starts) belong to the first epoch that ends at or after their step."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    ends = sorted((int(r["step"]), int(float(r["epoch"]))) for r in rows if r.get("epoch") and r.get("step"))
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        epoch = int(float(row["epoch"])) if row.get("epoch") else next(
            (e for s, e in ends if row.get("step") and s >= int(row["step"])), None)
        if epoch is None:
            continue
        for k, v in row.items():
            if k not in ("epoch", "step") and v not in ("", None):
                sums[k][epoch].append(float(v))
    return {k: {e: float(np.mean(v)) for e, v in sorted(by.items())} for k, by in sums.items()}


def training_curves(run_dir: Path, monitor: str) -> str | None:
    """Loss, the monitored metric and the learning rate per epoch, one line per fold (from logs/metrics.csv)."""
    logs = {p.parents[1].name: _epoch_rows(p) for p in sorted(run_dir.glob("fold_*/logs/metrics.csv"))}
    if not logs:
        return None
    # the epoch means (train/loss_epoch), not the sampled steps (train/loss_step) beside them
    panels = [("loss", lambda k: (k.endswith("loss") or "loss_" in k) and not k.endswith("_step")),
              (monitor, lambda k: k == monitor),
              ("learning rate", lambda k: k.startswith("lr-"))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (name, wanted) in zip(axes, panels):
        for fold, columns in logs.items():
            for key, values in columns.items():
                if wanted(key) and values:
                    ax.plot(list(values), list(values.values()), marker=".", label=f"{fold} {key}")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _figure(fig)


def fold_scores(summary: dict, metrics: list[str]) -> str | None:
    """Each fold's score per metric, with the mean and ± one standard deviation; None for one fold (the table
    says all there is)."""
    metrics = [m for m in metrics if m in summary.get("mean", {})][:6]
    if not metrics or len(summary.get("folds", [])) < 2:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metrics), 3.2))
    for x, m in enumerate(metrics):
        values = [f["metrics"][m] for f in summary["folds"] if m in f.get("metrics", {})]
        ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, s=18, color="tab:blue",
                   label="folds" if x == 0 else None)
        ax.errorbar(x + 0.3, summary["mean"][m], yerr=summary["std"][m], fmt="D", color="black", capsize=4,
                    label="mean ± std" if x == 0 else None)
    ax.set_xticks(range(len(metrics)), metrics, rotation=20, fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title("held-out score per fold")
    fig.tight_layout()
    return _figure(fig)


def _per_image(run_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(run_dir.glob("fold_*/predictions/per_image.csv")):
        with open(path, newline="") as f:
            rows += [{**r, "fold": path.parents[1].name, "dice": float(r["dice"])} for r in csv.DictReader(f)]
    return rows


def dice_distribution(rows: list[dict]) -> str | None:
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist([r["dice"] for r in rows], bins=20, range=(0, 1), color="tab:blue")
    ax.set_xlabel("Dice per held-out image")
    ax.set_ylabel("images")
    ax.set_title(f"{len(rows)} held-out images, median {np.median([r['dice'] for r in rows]):.3f}")
    fig.tight_layout()
    return _figure(fig)


def classifier_roc(rows: list[dict]) -> str | None:
    """The cascade classifier's ROC for "mask present", over every fold's held-out images."""
    from sklearn.metrics import RocCurveDisplay

    if not rows or "classifier_probability" not in rows[0]:
        return None
    truth = [float(r["mask_present"]) > 0.5 for r in rows]
    if len(set(truth)) < 2:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 4))
    RocCurveDisplay.from_predictions(truth, [float(r["classifier_probability"]) for r in rows], name="classifier",
                                     ax=ax)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_title('classifier: "mask present" (held-out)')
    fig.tight_layout()
    return _figure(fig)


def write_montage(run_dir: Path, store) -> Path | None:
    """Worst, median and best held-out images by Dice: image, ground truth and prediction outlines."""
    rows = sorted(_per_image(run_dir), key=lambda r: r["dice"])
    if not rows or store is None:
        return None
    picks = [("worst", rows[0]), ("median", rows[len(rows) // 2]), ("best", rows[-1])]
    from PIL import Image

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    index = {s.id: k for k, s in enumerate(store.samples)}
    for ax, (name, row) in zip(axes, picks):
        image, target = store.get(index[row["id"]])
        pred = np.asarray(Image.open(run_dir / row["fold"] / "predictions" / f"{row['id']}.png")) > 0
        truth = np.asarray(target)
        truth = truth[..., 0] if truth.ndim == 3 else truth
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        for mask, colour in ((truth > 0, "lime"), (pred, "red")):
            if mask.shape == image.shape[:2] and mask.any():
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.2)
        ax.set_title(f"{name}: Dice {row['dice']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("held-out images (green: ground truth, red: prediction)", fontsize=9)
    fig.tight_layout()
    path = run_dir / MONTAGE
    fig.savefig(path, dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path


def classification_figures(run_dir: Path, classes: list[str], multilabel: bool, decision=None) -> str | None:
    """Out-of-fold ROC and precision-recall per class, the confusion matrix (single-label, labels by `decision`)
    and a reliability diagram, from the folds' predictions.csv."""
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    from medrun.evaluation.classification import draw_per_class
    from medrun.tasks.classification import read_predictions

    paths = sorted(run_dir.glob("fold_*/predictions.csv"))
    if not paths:
        return None
    y, probs = read_predictions(paths, classes, multilabel)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9))
    for ax, display, title in ((axes[0], RocCurveDisplay, "ROC (out-of-fold)"),
                               (axes[1], PrecisionRecallDisplay, "precision-recall (out-of-fold)"),
                               (axes[3], CalibrationDisplay, "reliability diagram")):
        draw_per_class(display, y, probs, classes, multilabel, ax, (decision or Decision()).positive)
        ax.set_title(title)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    if multilabel:
        axes[2].set_axis_off()
    else:
        ConfusionMatrixDisplay.from_predictions(y, (decision or Decision()).labels(probs, False),
                                                labels=list(range(len(classes))), display_labels=classes,
                                                colorbar=False, ax=axes[2])
        axes[2].set_title("confusion matrix")
    fig.tight_layout()
    return _figure(fig)


def run_report(run_dir: str | Path, store=None) -> Path:
    """Write <run>/report.html from what the run folder holds; `store` (the run's samples) draws the montage
    of held-out images, which later refreshes (eval, explain) reuse."""
    from medrun.inference import saved_config
    from medrun.tasks import TASKS

    run_dir = Path(run_dir)
    cfg = saved_config(run_dir)
    summary = read_json(run_dir / "cv_summary.json") if (run_dir / "cv_summary.json").is_file() else {}
    task = TASKS.get(cfg.task.name)
    headline = [str(m) for m in cfg.get("report") or []] or list(summary.get("mean", {}))
    sections = [section("Cross-validation", _md(run_dir / "summary.md"),
                        [("per-fold scores", fold_scores(summary, headline))] if summary else [],
                        note="" if summary else "the run has not finished: no cv_summary.json yet")]
    curves = training_curves(run_dir, str(cfg.callbacks.checkpoint.monitor))
    sections.append(section("Training", figures=[("training curves per fold", curves)] if curves else [],
                            note="" if curves else "no curves: the run logged without logger=csv"))
    if task.spatial:
        montage = write_montage(run_dir, store) if store is not None else None
        montage = montage or (run_dir / MONTAGE if (run_dir / MONTAGE).is_file() else None)
        figures = [("held-out images", _uri(montage.read_bytes()))] if montage else []
        rows = _per_image(run_dir)
        figures += [(name, f) for name, f in (("Dice distribution", dice_distribution(rows)),
                                               ("classifier ROC", classifier_roc(rows))) if f]
        sections.append(section("Segmentation", figures=figures))
    elif task.class_probabilities:
        figure = classification_figures(run_dir, [str(c) for c in cfg.data.classes],
                                        cfg.data.get("mode") == "multilabel", Decision.of_run(cfg))
        sections.append(section("Classification", figures=[("out-of-fold curves", figure)] if figure else []))
    for folder in sorted(run_dir.glob("fold_*/oversampling")):  # a montage per translator
        montages = [(f"{p.parent.name if p.parent != folder else 'synthetic'} montage", _uri(p.read_bytes()))
                    for p in sorted(folder.rglob("montage.png"))]
        sections.append(section(f"Oversampling, {folder.parent.name}", figures=montages))
    for kind, title in (("eval", "Evaluation"), ("explain", "Explanation")):
        for folder in sorted((run_dir / kind).glob("*")) if (run_dir / kind).is_dir() else []:
            sections.append(section(f"{title} {folder.name}", _md(folder / "summary.md"), _pngs(folder)))
    return render(run_dir / "report.html", f"{summary.get('experiment', cfg.name)}: run {run_dir.name}",
                  f"task {cfg.task.name}, model {cfg.model.name}, protocol {cfg.cv.name}", sections)


# ---- compare, reproduce, sweep ------------------------------------------------------------------------------

def compare_report(out_dir: Path, result: dict) -> Path:
    metrics = list(dict.fromkeys(m for r in result["metrics"].values() for m in r["mean"]))[:6]
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(metrics), 3.4))
    width = 0.8 / max(len(result["metrics"]), 1)
    for i, (name, r) in enumerate(result["metrics"].items()):
        xs = [x + i * width for x, m in enumerate(metrics) if m in r["mean"]]
        ax.bar(xs, [r["mean"][m] for m in metrics if m in r["mean"]], width,
               yerr=[r["std"][m] for m in metrics if m in r["mean"]], capsize=3, label=name[:40])
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(metrics))], metrics, rotation=20, fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title("mean ± std over the same folds")
    fig.tight_layout()
    return render(out_dir / "report.html", f"Compare: {len(result['runs'])} runs", out_dir.name,
                  [section("Side by side", _md(out_dir / "compare.md"), [("runs", _figure(fig))])])


def reproduce_report(report_dir: Path) -> Path:
    info = read_json(report_dir / "report.json")
    figures = [("paper vs measured (mean ± std)", _uri((report_dir / "report.png").read_bytes()))] \
        if (report_dir / "report.png").is_file() else []
    return render(report_dir / "report.html", f"Reproduce: {info.get('title', info.get('table'))}",
                  str(info.get("source", "")), [section("Paper and measured", _md(report_dir / "report.md"), figures)])


def _swept(jobs: list[dict]) -> dict[str, list]:
    """parameter -> its value in each job, for the overrides that differ between jobs."""
    values = [dict(o.split("=", 1) for o in j["overrides"] if "=" in o) for j in jobs]
    keys = dict.fromkeys(k for v in values for k in v)
    return {k: [v.get(k) for v in values] for k in keys if len({v.get(k) for v in values}) > 1}


def sweep_report(sweep_dir: Path) -> Path:
    summary = read_json(sweep_dir / "multirun_summary.json")
    jobs = sorted(summary["jobs"], key=lambda j: j["job"])
    done = [j for j in jobs if j.get("objective") is not None]
    figures = []
    if done and summary.get("optimize"):
        better = max if "loss" not in str(summary["optimize"]) else min
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([j["job"] for j in done], [j["objective"] for j in done], "o", label="job")
        ax.step([j["job"] for j in done], [better(d["objective"] for d in done[:k + 1]) for k in range(len(done))],
                where="post", label="best so far")
        ax.set(xlabel="job", ylabel=summary["optimize"], title="optimisation history")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figures.append(("optimisation history", _figure(fig)))
        swept = _swept(done)
        if swept:
            fig, axes = plt.subplots(1, len(swept), figsize=(3.6 * len(swept), 3.2), squeeze=False)
            for ax, (key, values) in zip(axes[0], swept.items()):
                try:
                    xs = [float(v) for v in values]
                except (TypeError, ValueError):
                    names = sorted({str(v) for v in values})
                    xs = [names.index(str(v)) for v in values]
                    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
                ax.scatter(xs, [j["objective"] for j in done])
                ax.set(xlabel=key, ylabel=summary["optimize"])
            fig.tight_layout()
            figures.append(("each parameter against the objective", _figure(fig)))
    return render(sweep_dir / "report.html", f"Sweep {sweep_dir.name}",
                  f"{len(jobs)} job(s), {len(summary['failed'])} failed",
                  [section("Jobs", _md(sweep_dir / "multirun_summary.md"), figures,
                           note="" if figures else "no objective: pass optimize=<metric> for the history plots")])
