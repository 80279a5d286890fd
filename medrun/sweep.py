"""`medrun -m train ...`: Hydra's own multirun, so any sweeper (basic, Optuna) and launcher (local, joblib,
submitit/SLURM) plugin runs the jobs. Each job is one `medrun.train` with its own run folder; a failing job
is recorded and returns NaN (a failed Optuna trial) instead of stopping the sweep; the sweep folder gets
multirun_summary.md/json, one row per job, sorted by the `optimize=` metric."""
from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medrun.allocator import keep_freed_memory
from medrun.config import check_choices, finish
from medrun.console import quiet_known_noise
from medrun.errors import MedrunError
from medrun.evaluation.reports import cell, lower_is_better, md, not_beaten, table_metrics
from medrun.multirun import one_line, run_multirun
from medrun.report import write_page
from medrun.runs import write_json, write_text

RECORD = "medrun_job.json"


def objective(summary: dict, metric: str, parts: str) -> float:
    """The CV mean of `metric` on the folds' validation parts, or on their test parts when asked by name (then the
    sweep selects on the test set, and says so)."""
    if parts not in ("validation", "test"):
        raise MedrunError(f"optimize_on={parts!r}; valid: validation, test")
    means = summary["mean"] if parts == "test" else (summary.get("validation") or {}).get("mean")
    if means is None:
        raise MedrunError("this task scores no validation part: optimize_on=test selects on the test parts "
                          "(labelled: test set used for model selection)")
    if metric not in means:
        raise MedrunError(f"optimize={metric!r} is not a metric of this run; valid: {', '.join(sorted(means))}")
    return float(means[metric])


def job(cfg: DictConfig) -> float:
    """Hydra's task function (module level, so launchers can pickle it): train, record, return the objective."""
    from hydra.core.hydra_config import HydraConfig

    from medrun.crossval import train

    quiet_known_noise()  # launchers (joblib, submitit) run jobs in fresh processes, without medrun's CLI start
    keep_freed_memory()
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    record = {"job": int(hydra.job.num), "overrides": overrides, "status": "failed",
              "report": list(cfg.get("report") or []), "optimize_on": str(cfg.get("optimize_on") or "validation")}
    value = math.nan
    try:
        cfg = finish(cfg, overrides)
        run_dir, summary = train(cfg)
        record.update(status="ok", run_dir=str(run_dir))
        if summary is not None:
            record.update(mean=summary["mean"], std=summary["std"], defined_in=summary.get("defined_in", {}),
                          folds=len(summary["folds"]), not_beaten=not_beaten(summary))
            metric = cfg.get("optimize")
            if metric:
                value = objective(summary, str(metric), str(cfg.get("optimize_on") or "validation"))
    except Exception as e:  # one failing job must not stop the others
        record.update(status="failed", error=one_line(e))
        print(f"medrun: error: job {record['job']} ({' '.join(overrides)}) failed: {record['error']}", file=sys.stderr)
    record["objective"] = None if math.isnan(value) else value
    write_json(Path(hydra.runtime.output_dir) / RECORD, record)
    if record["status"] == "failed" and "optuna" in str(hydra.sweeper.get("_target_", "")).lower():
        if str(OmegaConf.select(hydra.sweeper, "sampler._target_")).endswith("GridSampler"):
            # hydra-optuna-sweeper tells Optuna a failed trial outside study.optimize, where the grid sampler's
            # study.stop() after the last grid point raises: the sweep would end in a traceback with no summary. The
            # worst value is a completed trial a grid never learns from; the record above says the job failed
            return -math.inf if str(hydra.sweeper.get("direction")) == "maximize" else math.inf
        # Optuna's sweeper cannot be told a NaN objective; an exception makes the trial a failed one, and
        # max_failure_rate=1.0 (set by run_sweep) lets the study go on
        raise MedrunError(f"job {record['job']} failed: {record['error']}")
    return value


def _first_values(overrides: list[str]) -> list[str]:
    """The first job's overrides (each sweep replaced by its first value), to check the config before launching."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise MedrunError(f"bad sweep override: {' '.join(str(e).split())}") from None
    out = []
    for o in parsed:
        if o.key_or_group.startswith("hydra") or o.is_sweep_override() and not o.is_discrete_sweep():
            continue  # Hydra's own settings, and Optuna's interval/tag search spaces
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for v in values:
            check_choices([f"{o.get_key_element()}={v}"])
        out.append(f"{o.get_key_element()}={values[0]}")
    return out


def run_sweep(overrides: list[str]) -> Path:
    """Run the sweep through hydra.main and return its folder (with multirun_summary.json)."""
    from medrun.config import compose

    first = compose("train", _first_values(overrides))
    if first.trainer.strategy == "ddp" and first.trainer.devices != 1:
        raise MedrunError("-m cannot be combined with trainer.strategy=ddp (each DDP child would restart the sweep); "
                          "use a launcher (hydra/launcher=submitit_slurm) with one DDP job each, or trainer=gpu")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    sweep_dir = Path(str(first.paths.output_dir)).resolve() / "multirun" / stamp
    extra = [f"hydra.sweep.dir={sweep_dir}"]
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        # joblib's worker processes outlive one sweep and keep the cwd they started in: pin the runs' folder
        extra.append(f"paths.output_dir={Path(str(first.paths.output_dir)).resolve()}")
    optuna = any(o.startswith(("hydra/sweeper=optuna", "hydra.sweeper=optuna")) for o in overrides)
    if optuna and first.optimize and not any(o.startswith("hydra.sweeper.direction") for o in overrides):
        # optimize=jaccard means the higher the better; a loss, false negatives or a Brier score are minimised
        extra.append(f"hydra.sweeper.direction={'minimize' if lower_is_better(str(first.optimize)) else 'maximize'}")
    if optuna and not any(o.startswith("hydra.sweeper.max_failure_rate") for o in overrides):
        # a failed job is a failed trial (its objective is NaN): the study goes on, as any other sweep does
        extra.append("hydra.sweeper.max_failure_rate=1.0")
    run_multirun("train", job, [*overrides, *extra])
    return summarize_sweep(sweep_dir, first.optimize)


def summarize_sweep(sweep_dir: Path, optimize: str | None = None) -> Path:
    """multirun_summary.json and .md: one row per job (overrides, status, run folder, CV mean ± std), best first."""
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{RECORD}"))]
    if not records:
        raise MedrunError(f"the sweep in {sweep_dir} ran no job; see the messages above")
    sign = -1 if optimize and not lower_is_better(str(optimize)) else 1
    records.sort(key=lambda r: (r["objective"] is None, sign * (r["objective"] or 0), r["job"]))
    optimize_on = next((r.get("optimize_on") for r in records if r.get("optimize_on")), "validation")
    summary = {"sweep_dir": str(sweep_dir), "optimize": optimize, "optimize_on": optimize_on, "jobs": records,
               "failed": [r["job"] for r in records if r["status"] != "ok"]}
    optuna = sweep_dir / "optimization_results.yaml"
    if optuna.is_file():
        summary["optuna"] = OmegaConf.to_container(OmegaConf.load(optuna))
    write_json(sweep_dir / "multirun_summary.json", summary)
    metrics = table_metrics([m for r in records for m in r.get("report") or []], [r.get("mean") or {} for r in records])
    lines = [f"# Sweep {sweep_dir.name}: {len(records)} job(s), {len(summary['failed'])} failed"
             + (f", sorted by {optimize}" if optimize else ""), ""]
    if optimize:
        lines += [f"> Objective: the CV mean of {optimize} on the folds' **{optimize_on}** parts"
                  + (": test set used for model selection." if optimize_on == "test" else
                     " (the table shows the test parts, scored once).") + "", ""]
    lines += [
             "| job | overrides | status | " + " | ".join(map(md, metrics)) + " | run folder |",
             "|---|---|---|" + "---|" * len(metrics) + "---|"]
    for r in records:
        cells = [cell(r, m, r.get("folds", 2)) if m in (r.get("mean") or {}) else "-"
                 for m in metrics]
        status = r["status"] if r["status"] == "ok" else f"failed: {r.get('error', '')[:80]}"
        lines.append(f"| {r['job']} | {md(' '.join(r['overrides']))} | {md(status)} | " + " | ".join(cells)
                     + f" | {md(r.get('run_dir', '-'))} |")
    for r in records:  # the jobs a trivial predictor matches on a reported metric
        for m, name, value, ours in r.get("not_beaten") or []:
            if m in metrics or m == optimize:
                lines += ["", f"> Job {r['job']} does not beat the trivial row {md(name)} on {md(m)} ({value:.4f} vs "
                              f"{ours:.4f})."]
    if "optuna" in summary:
        lines += ["", f"Optuna best parameters: {summary['optuna'].get('best_params')} "
                      f"(value {summary['optuna'].get('best_value')})"]
    write_text(sweep_dir / "multirun_summary.md", "\n".join(lines) + "\n")
    write_page("sweep", sweep_dir)
    return sweep_dir
