"""report.json, report.md and report.png of a `medrun reproduce` table: paper vs measured, row by row."""
from __future__ import annotations

import os
from pathlib import Path

from medrun.reproduce.tables import Table
from medrun.runs import write_json, write_text


def _num(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _flag(x) -> str:
    return "-" if x is None else ("yes" if x else "no")


def _p(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def write_report(report_dir: Path, table: Table, jobs: list[dict], info: dict) -> None:
    write_json(report_dir / "report.json", {
        "table": table.key, "title": table.title, "source": table.source, "table_file": str(table.path), **info,
        "protocols": {k: table.protocols[k] for k in info["protocols"]},
        "rows": [{**job, "caveats": table.row(job["row"]).caveats} for job in jobs],
        "protocol_gaps": protocol_gaps(table, jobs)})
    _markdown(report_dir, table, jobs, info)
    _figure(report_dir, table, jobs)


def protocol_gaps(table: Table, jobs: list[dict]) -> list[dict]:
    """For rows measured under a leaking protocol and a leak-free one: the difference of our two means."""
    leaky = [k for k, p in table.protocols.items() if p["leaks"]]
    clean = [k for k, p in table.protocols.items() if not p["leaks"]]
    measured = {(j["row"], j["protocol"]): j["metrics"] for j in jobs if j.get("metrics")}
    return [{"row": r.name, "metric": m.name, "protocols": [a, b],
             "gap": measured[(r.name, a)][m.name]["ours"] - measured[(r.name, b)][m.name]["ours"]}
            for r in table.rows for a in leaky for b in clean for m in r.metrics
            if (r.name, a) in measured and (r.name, b) in measured]


def _markdown(report_dir: Path, table: Table, jobs: list[dict], info: dict) -> None:
    failed = sum(j["status"].startswith("failed") for j in jobs)
    not_run = sum(j["status"].startswith("not run") for j in jobs)
    lines = [f"# {table.title}", "", f"Source: {table.source}", "",
             f"{len(jobs)} row x protocol job(s): {len(jobs) - failed - not_run} measured, {failed} failed, "
             f"{not_run} not run. Ours: mean ± sample std over folds or repeats (n). Difference: ours - paper. "
             "Spread: ours inside the paper's mean ± std. p: Welch's t-test from both means, stds and ns.", ""]
    if info["quick"] or any(j.get("quick") for j in jobs):
        lines += ["> **Quick run** (tiny images, few steps): a smoke test of the pipeline. The numbers are not "
                  "comparable with the paper's.", ""]
    if any(m.paper is None for r in table.rows for m in r.metrics):
        lines += [f"> Paper values marked `n/t` are not transcribed in {table.path.name}; fill `Results.Metrics` "
                  "(and `Spread`, `N`) from the paper to get differences and p-values.", ""]
    lines += ["| row | dataset | protocol | metric | paper | ours (n) | difference | in spread | in tolerance | p | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for j in jobs:
        status = j["status"] + (" (quick)" if j.get("quick") and j["status"] == "ok" else "")
        metrics = j.get("metrics") or {m.name: None for m in table.row(j["row"]).metrics}
        for name, c in metrics.items():
            paper = next(m for m in table.row(j["row"]).metrics if m.name == name)
            shown = "n/t" if paper.paper is None else f"{_num(paper.paper)}" + (
                f" ± {_num(paper.std)}" if paper.std is not None else "") + (f" ({paper.n})" if paper.n else "")
            ours = "-" if c is None else f"{_num(c['ours'])}" + (
                f" ± {_num(c['ours_std'])}" if c["ours_n"] > 1 else "") + f" ({c['ours_n']})"
            diff = "-" if c is None or c["difference"] is None else f"{c['difference']:+.4f}"
            lines.append(f"| {j['row']} | {j['dataset']} | {j['protocol']} | {name} | {shown} | {ours} | {diff} | "
                         f"{_flag(c and c['within_spread'])} | {_flag(c and c['within_tolerance'])} | "
                         f"{_p(c and c['welch_p'])} | {status} |")
    gaps = protocol_gaps(table, jobs)
    if gaps:
        lines += ["", "## Gap between protocols", "",
                  "What the leaking protocol adds: ours under it minus ours under the leak-free one, same row and data.", "",
                  "| row | metric | " + " - ".join(gaps[0]["protocols"]) + " |", "|---|---|---|"]
        lines += [f"| {g['row']} | {g['metric']} | {g['gap']:+.4f} |" for g in gaps]
    lines += ["", "## Protocols", ""]
    lines += [f"- **{k}** (`cv={table.protocols[k]['cv']}`): {table.protocols[k]['label']}" for k in info["protocols"]]
    lines += ["", "## Caveats", ""]
    lines += [f"- **{r.name}** ({r.dataset}): {c}" for r in table.rows for c in r.caveats] or ["- none recorded"]
    lines += ["", "## Run folders", ""]
    lines += [f"- {j['row']}, {j['protocol']}: [{j['run_dir']}]({os.path.relpath(j['run_dir'], report_dir)})"
              for j in jobs if j.get("run_dir")] or ["- none"]
    write_text(report_dir / "report.md", "\n".join(lines) + "\n")


def _figure(report_dir: Path, table: Table, jobs: list[dict]) -> None:
    """Paper (mean ± std) and ours (mean ± std) on one line per row x protocol x metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [(f"{j['row']} [{j['protocol']}] {name}", c) for j in jobs for name, c in (j.get("metrics") or {}).items()]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(len(lines), 1)))
    papers = [(y, c) for y, (_, c) in enumerate(lines) if c["paper"] is not None]
    for y, (_, c) in enumerate(lines):
        ax.errorbar(c["ours"], y + 0.12, xerr=c["ours_std"], fmt="o", color="tab:blue", capsize=3,
                    label=None if y else "measured")
    for i, (y, c) in enumerate(papers):
        ax.errorbar(c["paper"], y - 0.12, xerr=c["paper_std"] or 0, fmt="s", color="tab:orange", capsize=3,
                    label=None if i else "paper")
    if lines:
        ax.set_yticks(range(len(lines)), [label for label, _ in lines], fontsize=8)
        ax.invert_yaxis()
        ax.legend(loc="best", fontsize=8)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no row measured (see report.md)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("value (mean ± std)")
    ax.set_title(table.title[:90], fontsize=9)
    fig.tight_layout()
    fig.savefig(report_dir / "report.png", dpi=110)
    plt.close(fig)
