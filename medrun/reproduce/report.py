"""report.json, report.md and report.png of a `medrun reproduce` table: paper vs measured, row by row."""
from __future__ import annotations

import os
from pathlib import Path

from medrun.evaluation.reports import lower_is_better
from medrun.reproduce.statistics import paired_comparison, unpaired_comparison
from medrun.reproduce.tables import REFERENCE, Table
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
        "protocol_gaps": protocol_gaps(table, jobs), "gap_sources": gap_sources(table, jobs),
        "relative_gains": relative_gains(table, jobs)})
    _markdown(report_dir, table, jobs, info)
    quick = bool(info["quick"] or any(j.get("quick") for j in jobs))
    figure(table.title, jobs, quick).savefig(report_dir / "report.png", dpi=110)


def _baseline_protocol(table: Table) -> str | None:
    """The protocol every other one is compared with: leak_free when the table has it, else the first leak-free one."""
    clean = [k for k, p in table.protocols.items() if not p["leaks"]]
    return "leak_free" if "leak_free" in table.protocols else (clean[0] if clean else None)


def protocol_gaps(table: Table, jobs: list[dict]) -> list[dict]:
    """For each row measured under a protocol and under the leak-free baseline one: the difference of our means."""
    base = _baseline_protocol(table)
    measured = {(j["row"], j["protocol"]): j["metrics"] for j in jobs if j.get("metrics")}
    return [{"row": r.name, "metric": m.name, "protocols": [a, base],
             "gap": measured[(r.name, a)][m.name]["ours"] - measured[(r.name, base)][m.name]["ours"]}
            for r in table.rows for a in table.protocols if a != base for m in r.metrics
            if (r.name, a) in measured and (r.name, base) in measured]


def gap_sources(table: Table, jobs: list[dict]) -> list[dict]:
    """Per row and metric, ours minus the paper split into three effects: definition (the paper's metric minus
    medrun's, same run), protocol (the published protocol minus the leak-free one, the paper's metric) and what
    remains under the paper's metric and protocol (method, data, training setup)."""
    source = table.published_with or next((k for k, p in table.protocols.items() if p["leaks"]), None)
    base = _baseline_protocol(table)
    measured = {(j["row"], j["protocol"]): j["metrics"] for j in jobs if j.get("metrics")}
    out = []
    for r in table.rows:
        at_source = measured.get((r.name, source)) or measured.get((r.name, base))
        if not at_source:
            continue
        for m in r.metrics:
            c = at_source[m.name]
            clean = (measured.get((r.name, base)) or {}).get(m.name)
            trivial = c.get("best_trivial")
            beats = None if not trivial else (c["ours"] < trivial[1] if lower_is_better(m.measure.rsplit("/", 1)[-1])
                                              else c["ours"] > trivial[1])
            out.append({"row": r.name, "metric": m.name, "paper": m.paper, "ours": c["ours"],
                        "best_trivial": trivial, "beats_trivial": beats,
                        "protocol": source if (r.name, source) in measured else base,
                        "definition_gap": c["ours"] - c["definitions"]["medrun"] if "medrun" in c["definitions"] else None,
                        "protocol_gap": c["ours"] - clean["ours"] if clean and (r.name, source) in measured
                        and source != base else None,
                        "remaining_gap": c["difference"]})
    return out


def relative_gains(table: Table, jobs: list[dict]) -> list[dict]:
    """Each gain the text quotes beside the one the paper's table implies and ours under every measured protocol;
    where both runs of a protocol were tested on the same parts, fold by fold, the paired comparison too (the
    unpaired one where all their trainings shared one test part)."""
    measured = {(j["row"], j["protocol"]): j["metrics"] for j in jobs if j.get("metrics")}
    parts = {(j["row"], j["protocol"]): (j.get("test_parts"), j.get("one_test_part")) for j in jobs
             if j.get("metrics")}

    def paired(g, p):
        base, improved = (measured[(g[r], p)][g["metric"]].get("per_fold") for r in ("base", "improved"))
        (fingerprint, one_part), other = parts[(g["base"], p)], parts[(g["improved"], p)]
        if not (fingerprint and (fingerprint, one_part) == other and base and improved):
            return None
        if one_part:
            return unpaired_comparison(base, improved)
        return paired_comparison(base, improved) if len(base) == len(improved) else None

    def gain(base, improved):
        return None if base is None or improved is None or base == 0 else (improved - base) / base

    out = []
    for g in table.relative_gains:
        paper = {r: next((m.paper for m in table.row(g[r]).metrics if m.name == g["metric"]), None)
                 for r in ("base", "improved")}
        ours = {p: gain(measured[(g["base"], p)][g["metric"]]["ours"], measured[(g["improved"], p)][g["metric"]]["ours"])
                for p in table.protocols if (g["base"], p) in measured and (g["improved"], p) in measured}
        out.append({**g, "from_paper_means": gain(paper["base"], paper["improved"]), "ours": ours,
                    "paired": {p: paired(g, p) for p in ours}})
    return out


def _paired(c: dict | None) -> str:
    """The comparison as the gains table quotes it: '; higher in 5 of 5 folds, paired t p 0.0066', or for
    trainings on one test part '; one test part: higher in 25 of 25 pairs of trainings, Welch t p 0.0001'."""
    if not c:
        return ""
    if "pairs" in c:
        return (f"; one test part: higher in {c['better']} of {c['pairs']} pairs of trainings, "
                f"Welch t p {_p(c['welch_p'])}")
    return f"; higher in {c['better']} of {c['n']} folds, paired t p {_p(c['paired_t_p'])}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.2f} %"


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.4f}"


def _markdown(report_dir: Path, table: Table, jobs: list[dict], info: dict) -> None:
    failed = sum(j["status"].startswith("failed") for j in jobs)
    not_run = sum(j["status"].startswith("not run") for j in jobs)
    reference = sum(j["status"] == REFERENCE for j in jobs)
    lines = [f"# {table.title}", "", f"Source: {table.source}", "",
             f"{len(jobs) - reference} row x protocol job(s): {len(jobs) - reference - failed - not_run} measured, "
             f"{failed} failed, {not_run} not run" + (f"; {reference} published baseline(s) shown for reference"
                                                     if reference else "") + ". "
             "Ours: mean ± sample std over folds, or over the repeats' means of a repeated k-fold (n), under the "
             "paper's metric definition; medrun's own definition beside it. Difference: ours - paper. Spread: ours "
             "inside the paper's mean ± std. p: Welch's t-test from both means, stds and ns.", ""]
    if table.published_with:
        lines += [f"The published numbers came from protocol **{table.published_with}**.", ""]
    if table.paper_std == "population":
        lines += ["The paper's standard deviations are the population form (numpy's `np.std`, ddof=0, as its code "
                  "computes them); ours are sample stds (ddof=1). Welch's test takes the paper's as sample stds "
                  "(x sqrt(n / (n - 1))); the spread column compares with the published value as it stands.", ""]
    if info["quick"] or any(j.get("quick") for j in jobs):
        lines += ["> **Quick run** (tiny images, few steps): a smoke test of the pipeline. The numbers are not "
                  "comparable with the paper's.", ""]
    if any(m.paper is None and m.std is None for r in table.rows if r.paper_row for m in r.metrics
           if m.name not in r.not_published):
        lines += [f"> Paper values marked `n/t` are not transcribed in {table.path.name}; fill `Results.Metrics` "
                  "(and `Spread`, `N`) from the paper to get differences and p-values.", ""]
    lines += ["| row | dataset | protocol | metric | paper | ours (n) | ours, medrun's definition | difference | "
              "in spread | in tolerance | p | best trivial row | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    quick = bool(info["quick"] or any(j.get("quick") for j in jobs))
    for j in jobs:
        status = j["status"] + (" (quick)" if j.get("quick") and j["status"] == "ok" else "") + (
            f" (without {'; '.join(j['stand_ins'])})" if j.get("stand_ins") else "")
        metrics = j.get("metrics") or {m.name: None for m in table.row(j["row"]).metrics}
        for name, c in metrics.items():
            paper = next(m for m in table.row(j["row"]).metrics if m.name == name)
            row = table.row(j["row"])
            if paper.paper is None and paper.std is None:
                shown = "n/t" if row.paper_row and name not in row.not_published else "-"
            else:  # a figure may publish the spread alone: "n/p" marks the mean it does not give
                shown = ("n/p" if paper.paper is None else _num(paper.paper)) + (
                    f" ± {_num(paper.std)}" if paper.std is not None else "") + (f" ({paper.n})" if paper.n else "")
            ours = "-" if c is None else f"{_num(c['ours'])}" + (
                f" ± {_num(c['ours_std'])}" if c["ours_n"] > 1 else "") + f" ({c['ours_n']})"
            own = "-" if c is None or "medrun" not in c.get("definitions", {}) else _num(c["definitions"]["medrun"])
            diff = "-" if c is None or c["difference"] is None else f"{c['difference']:+.4f}"
            # a quick run's numbers are noise: no test, spread or tolerance verdict is drawn from them
            verdicts = ["-", "-", "-"] if quick else [_flag(c and c['within_spread']), _flag(c and c['within_tolerance']),
                                                      _p(c and c['welch_p'])]
            trivial = c and c.get("best_trivial")  # the same test parts, under this protocol
            lines.append(f"| {j['row']} | {j['dataset']} | {j['protocol']} | {name} | {shown} | {ours} | {own} | {diff} | "
                         f"{' | '.join(verdicts)} | {f'{trivial[0]} {_num(trivial[1])}' if trivial else '-'} | "
                         f"{status} |")
    sources = gap_sources(table, jobs)
    if sources:
        lines += ["", "## Where the gap comes from", "",
                  "Definition: ours under the paper's metric minus ours under medrun's, same runs. Protocol: ours under "
                  "the published protocol minus ours under the leak-free one. Remaining: ours under the paper's metric "
                  "and protocol minus the paper (method, data and training setup). Best trivial row: what a trivial "
                  "predictor (all-empty masks, the majority class) scores on the same test parts; **no** marks a "
                  "method that does not beat it.", "",
                  "| row | metric | protocol | paper | ours | definition | protocol | remaining | best trivial row | beats it |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {g['row']} | {g['metric']} | {g['protocol']} | {_num(g['paper'])} | {_num(g['ours'])} | "
                  f"{_signed(g['definition_gap'])} | {_signed(g['protocol_gap'])} | {_signed(g['remaining_gap'])} | "
                  + (f"{g['best_trivial'][0]} {_num(g['best_trivial'][1])}" if g["best_trivial"] else "-")
                  + f" | {'-' if g['beats_trivial'] is None else ('yes' if g['beats_trivial'] else '**no**')} |"
                  for g in sources]
    gains = relative_gains(table, jobs)
    if gains:
        lines += ["", "## Relative gains quoted in the text", "",
                  "(improved - base) / base of the metric: as the text quotes it, as the paper's own table means give "
                  "it, and ours under each protocol; where the two runs were tested on the same images fold by fold, "
                  "in how many folds the improved row scored higher and the paired t-test's p; where every training "
                  "of both shared one test part, in how many pairs of trainings it scored higher and Welch's p.",
                  "",
                  "| metric | improved over base | quoted | from the paper's means | ours |", "|---|---|---|---|---|"]
        lines += [f"| {g['metric']} | {g['improved']} over {g['base']} | {_pct(g['paper'])} | {_pct(g['from_paper_means'])} "
                  f"| " + ("- (quick run: noise)" if quick else ", ".join(f"{_pct(v)} ({k}{_paired(g['paired'][k])})"
                                                                        for k, v in g["ours"].items()) or "-") + " |"
                  for g in gains]
    gaps = protocol_gaps(table, jobs)
    if gaps:
        lines += ["", "## Gap between protocols", "",
                  "Ours under each protocol minus ours under the leak-free one, same row, data and metric.", "",
                  "| row | metric | protocols | gap |", "|---|---|---|---|"]
        lines += [f"| {g['row']} | {g['metric']} | {' - '.join(g['protocols'])} | {g['gap']:+.4f} |" for g in gaps]
    defined = {m.name: m for r in table.rows for m in r.metrics}
    lines += ["", "## Metric definitions", ""]
    lines += [f"- **{name}**: {m.definition or 'as medrun computes it'} (`{m.measure}`"
              + (f"; medrun's own: `{m.medrun}`" if m.medrun else "")
              + "".join(f"; {label}: `{key}`" for label, key in m.also.items()) + ")" for name, m in defined.items()]
    shown = [(j, name, c) for j in jobs for name, c in (j.get("metrics") or {}).items()
             if any(abs(v - c["ours"]) > 1e-6 for v in c["definitions"].values())]
    if shown:
        labels = list(dict.fromkeys(label for _, _, c in shown for label in c["definitions"]))
        lines += ["", "Where the definitions differ on our runs:", "",
                  "| row | protocol | metric | paper's definition | " + " | ".join(labels) + " |",
                  "|---|---|---|---|" + "---|" * len(labels)]
        lines += [f"| {j['row']} | {j['protocol']} | {name} | {_num(c['ours'])} | "
                  + " | ".join(_num(c["definitions"].get(label)) for label in labels) + " |" for j, name, c in shown]
    notes = [(j, j["note"]) for j in jobs if j.get("note")]
    if notes:
        lines += ["", "## Run notes", "", "What the runs themselves recorded about their data and protocol:", ""]
        lines += [f"- **{j['row']}**, {j['protocol']}: {note}" for j, note in notes]
    lines += ["", "## Protocols", ""]
    if quick:
        lines += ["What ran: each protocol with the table's quick settings (" + " ".join(table.quick) + ") and its own "
                  "below, not the published setting.", ""]
    lines += [f"- **{k}** (`cv={table.protocols[k]['cv']}`" + (f"; ran with {' '.join(table.protocols[k]['quick'])}"
                                                              if quick and table.protocols[k]["quick"] else "")
              + f"): {table.protocols[k]['label']}" for k in info["protocols"]]
    lines += ["", "## Caveats", ""]
    rows_of: dict[str, list[str]] = {}  # a caveat shared by several rows is said once, naming them all
    for r in table.rows:
        for c in r.caveats:
            rows_of.setdefault(c, []).append(r.name)
    lines += [f"- **{'; '.join(names)}**: {c}" for c, names in rows_of.items()] or ["- none recorded"]
    if info.get("skipped"):
        lines += ["", "## Skipped folders", "", "Unreadable run folders under `runs=`, left out of the collection:", ""]
        lines += [f"- {line}" for line in info["skipped"]]
    lines += ["", "## Run folders", ""]
    lines += [f"- {j['row']}, {j['protocol']}: [{j['run_dir']}]({os.path.relpath(j['run_dir'], report_dir)})"
              for j in jobs if j.get("run_dir")] or ["- none"]
    write_text(report_dir / "report.md", "\n".join(lines) + "\n")


def _clipped(mean: float, std: float | None, bounded: bool):
    """An error bar of ± std, cut at 0 and 1 for a metric that cannot leave them (Dice 0.98 ± 0.05 ends at 1)."""
    std = std or 0.0
    return [[min(std, mean)], [min(std, 1 - mean)]] if bounded else std


def figure(title: str, jobs: list[dict], quick: bool = False):
    """Paper (mean ± std) and ours (mean ± std) on one line per row x protocol x metric, under the table's full
    title (a matplotlib Figure)."""
    import textwrap

    from matplotlib.figure import Figure

    lines = [(f"{j['row']} [{j['protocol']}] {name}", c) for j in jobs for name, c in (j.get("metrics") or {}).items()]
    fig = Figure(figsize=(8, 1.2 + 0.45 * max(len(lines), 1)))
    ax = fig.subplots()
    papers = [(y, c) for y, (_, c) in enumerate(lines) if c["paper"] is not None]
    values = [v for _, c in lines for v in (c["ours"], c["paper"]) if v is not None]
    bounded = all(0 <= v <= 1 for v in values)  # fractions (Dice, AUC, accuracy), not counts
    for y, (_, c) in enumerate(lines):
        ax.errorbar(c["ours"], y + 0.12, xerr=_clipped(c["ours"], c["ours_std"], bounded), fmt="o", color="tab:blue",
                    capsize=3, label=None if y else "measured" + (" (quick: not comparable)" if quick else ""))
    for i, (y, c) in enumerate(papers):
        ax.errorbar(c["paper"], y - 0.12, xerr=_clipped(c["paper"], c["paper_std"], bounded), fmt="s",
                    color="tab:orange", capsize=3, label=None if i else "paper")
    if lines:
        ax.set_yticks(range(len(lines)), [label for label, _ in lines], fontsize=8)
        ax.invert_yaxis()
        ax.legend(loc="best", fontsize=8)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no row measured (see report.md)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("value (mean ± std)")
    # over the whole figure, not the axes: long row labels narrow the axes and a title centred on them ran off the page
    title = ("QUICK RUN, not comparable with the paper: " if quick else "") + title
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=9, color="tab:red" if quick else "black")
    fig.tight_layout()
    return fig
