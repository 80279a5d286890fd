"""`medrun compare RUN RUN ...`: finished runs side by side on the same folds (the cascade against its
baseline for Table 5.1, oversampling choices): their mean ± std and their post-processing tables."""
from __future__ import annotations

import os
from pathlib import Path

from medrun.config_values import positive_index
from medrun.errors import MedrunError
from medrun.evaluation.paired import held_out_values, paired_test
from medrun.evaluation.reports import POSTPROCESSING_COLUMNS, cell, md, table_markdown, table_metrics
from medrun.inference import saved_config
from medrun.report import write_page
from medrun.runs import create_run_dir, read_json, require_run_dir, test_parts, write_json, write_text
from medrun.tasks import TASKS

def _positive_class(summary: dict, cfg) -> str | None:
    """The class a binary classifier's *_positive metrics are about (runs before cv_summary said so: the config)."""
    if summary.get("positive_class"):
        return summary["positive_class"]
    data = cfg.get("data") or {}
    classes = [str(c) for c in data.get("classes") or []]
    if cfg.task.name != "classification" or len(classes) != 2 or data.get("mode") == "multilabel":
        return None
    return classes[positive_index(data)]


def compare_runs(runs: list, output_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Write compare.md/json for `runs`, which must be finished and share their test parts."""
    if len(runs) < 2:
        raise MedrunError("usage: medrun compare RUN RUN [RUN ...] (at least two finished run folders)")
    dirs = [require_run_dir(r) for r in runs]
    for d in dirs:
        if not (d / "cv_summary.json").is_file():
            raise MedrunError(f"{d} has not finished (no cv_summary.json)")
    parts = [test_parts(read_json(d / "splits.json", ("folds",))) for d in dirs]
    reference = parts[0]
    for d, p in zip(dirs[1:], parts[1:]):
        if p != reference:
            raise MedrunError(f"{d} was scored on other test parts than {dirs[0]}; train the runs with the same seed "
                              f"and cv, or cv.splits_file={dirs[0]}/splits.json")
    loaded = [read_json(d / "cv_summary.json", ("experiment", "mean", "std")) for d in dirs]
    names = [f"{s['experiment']} ({d.name})" for s, d in zip(loaded, dirs)]
    if len(set(names)) < len(names):  # copies, run_dir= folders or one run twice: one row per folder, always
        names = [f"{s['experiment']} ({d})" if names.count(n) > 1 else n for s, d, n in zip(loaded, dirs, names)]
    if len(set(names)) < len(names):
        names = [f"{n} #{k + 1}" for k, n in enumerate(names)]
    summaries = dict(zip(names, loaded))
    configs = [saved_config(d) for d in dirs]
    metrics = table_metrics([m for c in configs for m in c.get("report") or []], [s["mean"] for s in loaded])
    positives = [_positive_class(s, c) for s, c in zip(loaded, configs)]
    note = []
    if len({p for p in positives if p}) > 1:  # *_positive would put different classes side by side
        first = next(p for p in positives if p)
        metrics = [f"{m.removesuffix('_positive')}_{first}" if m.endswith("_positive") else m for m in metrics]
        note = [f"> The runs name different positive classes ({md(', '.join(p or '-' for p in positives))}): the "
                f"columns name the class they are about, {md(first)}.", ""]
    lines = [f"# {len(dirs)} runs on the same {len(reference) - 1} fold(s)", "", *note,
             "| run | " + " | ".join(map(md, metrics)) + " |", "|---|" + "---|" * len(metrics)]
    for name, s in summaries.items():
        lines.append(f"| {md(name)} | " + " | ".join(cell(s, m, len(reference) - 1)
                                                  if m in s["mean"] else "-" for m in metrics) + " |")
    # the same test parts give the same trivial rows: shown once, marked as references, never as methods
    trivial = next((s["trivial"] for s in summaries.values() if s.get("trivial")), {})
    for name, row in trivial.items():
        lines.append(f"| *reference: {md(name)}* | " + " | ".join(
            cell(row, m, len(reference) - 1) if m in row["mean"] else "-"
            for m in metrics) + " |")
    table = {f"{name}: {row}": values for (name, s), c in zip(summaries.items(), configs)
             for key in TASKS.get(c.task.name).summary_tables for row, values in s.get(key, {}).items()}
    paired = paired_tests(dirs, list(summaries))
    lines += paired_markdown(paired, list(summaries)[0])
    text = "\n".join(lines) + "\n"
    if table:
        text += table_markdown(table, "Post-processing side by side (mean ± std over folds)",
                               "Each run's thresholds were searched on its own validation parts.")
    out = create_run_dir(output_dir or os.environ.get("MEDRUN_OUTPUT_DIR", "outputs"), "compare")
    result = {"runs": [str(d) for d in dirs], "metrics": {n: {"mean": s["mean"], "std": s["std"]}
                                                          for n, s in summaries.items()},
              "postprocessing": table, "columns": list(POSTPROCESSING_COLUMNS), "trivial": trivial, "paired": paired}
    write_json(out / "compare.json", result)
    write_text(out / "compare.md", text)
    write_page("compare", out, result)
    return out, result


def paired_tests(dirs: list[Path], names: list[str]) -> dict:
    """Each run against the first on the same held-out images (medrun.evaluation.paired); {} when the runs left
    no per-image values of one kind, or held images out more than once."""
    held = [held_out_values(d, read_json(d / "splits.json", ("folds",))) for d in dirs]
    if any(h is None for h in held) or len({kind for kind, _ in held}) > 1:
        return {}
    kind, first = held[0]
    return {name: paired_test(kind, first, values) for name, (_, values) in zip(names[1:], held[1:])}


def paired_markdown(paired: dict, first: str) -> list[str]:
    if not paired:
        return []
    lines = ["", f"## Paired tests against {md(first)}", "",
             "Each run against the first on the same held-out images, out of fold: the difference is the run's "
             "mean minus the first's" + (" (p not corrected for the several comparisons)." if len(paired) > 1 else "."),
             "", "| run | test | images | difference | p |", "|---|---|---|---|---|"]
    return lines + [f"| {md(name)} | {t['test']} | {t['n']} | {t['difference']:+.4f} | {t['p']:.4g} |"
                    for name, t in paired.items()]
