"""Copy a `medrun reproduce` report into results/<table>/ for committing, with where it came from.

    python scripts/save_results.py outputs/reproduce/<table>/<time> [--note "..."]

Writes results/<table>/report.md, report.json, report.png (paper vs ours; no checkpoint, no sample image),
provenance.md (the reproduce command, each measured run's own `medrun train` command, the commit, the machine,
the package versions and each run's training time) and runs/: each measured run's records (config, splits,
summaries, per-fold metrics, training curves, minutes.txt with its training time; no checkpoint, prediction or
image), from which `medrun reproduce <table> runs=results/<table>/runs` collects the same report again, and later
sessions add rows to it (`runs=results/<table>/runs,outputs`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINUTES = "minutes.txt"


def _minutes(run_dir: Path) -> float | None:
    """Minutes from the run folder's creation (config.yaml) to its last summary; for kept records, the minutes
    written beside them (a checkout resets the files' times)."""
    if (run_dir / MINUTES).is_file():
        return float((run_dir / MINUTES).read_text())
    start, end = run_dir / "config.yaml", run_dir / "cv_summary.json"
    if not (start.is_file() and end.is_file()):
        return None
    return round((end.stat().st_mtime - start.stat().st_mtime) / 60, 1)


RECORDS = ("config.yaml", "overrides.txt", "splits.json", "cv_summary.json", "summary.md", "fold_*/metrics.json",
           "fold_*/trained.json", "fold_*/logs/metrics.csv")


def keep_records(run_dir: Path, runs: Path) -> Path:
    """A run's records under runs/<experiment>/<run folder>/, times kept (collection picks the newest run)."""
    target = runs / run_dir.parent.name / run_dir.name
    for pattern in RECORDS:
        for f in run_dir.glob(pattern):
            (target / f.relative_to(run_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target / f.relative_to(run_dir))
    if (minutes := _minutes(run_dir)) is not None:
        (target / MINUTES).write_text(f"{minutes}\n")
    return target


def save(report_dir: Path, note: str = "", results: Path = REPO / "results") -> Path:
    """results/<table>/ from a reproduce report folder; returns that folder."""
    report = json.loads((report_dir / "report.json").read_text())
    out = results / report["table"]
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.png"):
        shutil.copy(report_dir / name, out / name)
    md = (report_dir / "report.md").read_text()
    for row in report["rows"]:
        run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
        if not run_dir:
            continue
        collected_from_runs = run_dir.resolve().parents[1] == (out / "runs").resolve()
        kept = run_dir if collected_from_runs else keep_records(run_dir, out / "runs")
        # report.md links a run relative to its own folder: from results/<table>/ link the kept records instead
        link = os.path.relpath(kept.resolve(), out.resolve())
        md = re.sub(re.escape(f"[{row['run_dir']}](") + r"[^)]*\)", f"[{link}]({link})", md)
    (out / "report.md").write_text(md)
    import torch

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    lines = [f"# Provenance of results/{report['table']}", "",
             f"- saved: {datetime.now():%Y-%m-%d %H:%M}; medrun commit `{commit}`",
             f"- machine: {os.cpu_count()} CPU cores ({cpu}), no GPU" if not torch.cuda.is_available() else
             f"- machine: {torch.cuda.get_device_name(0)}",
             f"- torch {torch.__version__}, Python {platform.python_version()}",
             f"- report: `medrun reproduce {report['table']}" + (f" runs={','.join(report['runs'])}" if report.get("runs")
                                                                   else "")
             + (" train_missing=true" if report.get("train_missing") else "")
             + ("` (quick)" if report.get("quick") else "`"),
             *([f"- note: {note}"] if note else []), "", "## Runs", "",
             "| row | protocol | status | minutes | command |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
        command = "-"
        if run_dir and (run_dir / "overrides.txt").is_file():
            command = "`medrun train " + " ".join((run_dir / "overrides.txt").read_text().split()) + "`"
        # the status's first clause ("ok", "not run", "reference"): report.md gives the whole reason
        lines.append(f"| {row['row']} | {row['protocol']} | {row['status'].split(':')[0]} | "
                     f"{_minutes(run_dir) if run_dir else '-'} | {command} |")
    (out / "provenance.md").write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    print(f"saved {save(args.report_dir, args.note)}")


if __name__ == "__main__":
    main()
