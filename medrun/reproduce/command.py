"""`medrun reproduce TABLE`: run (or collect) every row of a paper table under the paper's protocol and medrun's
leak-free one, as the jobs of one Hydra multirun, and write the report beside the paper's numbers."""
from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medrun.config import CONFIG_DIR, compose
from medrun.console import quiet_known_noise
from medrun.errors import MedrunError
from medrun.reproduce.report import write_report
from medrun.reproduce.statistics import compare_values
from medrun.reproduce.tables import REFERENCE, Table, load_table
from medrun.evaluation.reports import lower_is_better
from medrun.evaluation.trivial import best_trivial
from medrun.models.pretrained import Weights, requested
from medrun.multirun import one_line, run_multirun
from medrun.report import write_page
from medrun.runs import check_name, create_run_dir, write_json
from medrun.tasks.segmentation import ALL_EMPTY

QUICK_SUFFIX = "_quick"  # quick runs get their own run folders: never mixed with full-size runs of a row


def experiment_name(experiment: str) -> str:
    path = CONFIG_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        raise MedrunError(f"unknown experiment {experiment!r} in a table row; see `medrun list experiment`")
    return check_name(OmegaConf.load(path).name)


def served_by_cache(spec: dict) -> bool:
    """An input's weights come from the library's cache: cached here, or fetched when a row runs online."""
    if not spec.get("cached"):
        return False
    from huggingface_hub import is_offline_mode

    library, name = spec["cached"]["weights"].split()
    return not is_offline_mode() or Weights(library, name).cached_file() is not None


def uncached_weights(overrides: list[str]) -> list[Weights]:
    """Offline, the pretrained weights a job's config asks for that no cache holds (online, a run fetches them)."""
    from huggingface_hub import is_offline_mode

    if not is_offline_mode():
        return []
    return [w for w in requested(compose("train", overrides, required=False).model) if w.cached_file() is None]


def plan(table: Table, inputs: dict, quick: bool, protocols: list[str], output_dir: Path) -> list[dict]:
    """One job per row and protocol: its train overrides, or why it cannot run."""
    unknown = sorted(set(inputs) - set(table.inputs))
    if unknown:
        raise MedrunError(f"{unknown[0]} is not an input of table {table.key}; valid: {', '.join(table.inputs)}")
    bad = [p for p in protocols if p not in table.protocols]
    if bad:
        raise MedrunError(f"protocols={bad[0]} is not a protocol of table {table.key}; valid: {', '.join(table.protocols)}")
    jobs = []
    for row in table.rows:
        if row.experiment is None:
            jobs.append({"row": row.name, "dataset": row.dataset, "experiment": None, "protocol": "-", "quick": quick,
                         "status": REFERENCE})
            continue
        name = experiment_name(row.experiment) + (QUICK_SUFFIX if quick else "")
        # weights the library's cache serves (or fetches, online) need no file; quick=true may run without an input
        # whose table entry says how (e.g. random weights for a weights file)
        cached = [k for k in row.needs if not inputs.get(k) and served_by_cache(table.inputs[k])]
        stand_ins = [k for k in row.needs if not inputs.get(k) and k not in cached and quick
                     and table.inputs[k].get("quick_without")]
        missing = [k for k in row.needs if not inputs.get(k) and k not in stand_ins + cached]
        absent = [k for k in row.needs if inputs.get(k) and not Path(inputs[k]).expanduser().exists()]
        for pname in protocols:
            p = table.protocols[pname]
            if p["only"] and row.experiment not in p["only"]:
                continue  # a protocol about a part this row has not (the cascade's classifier for a plain U-Net)
            job = {"row": row.name, "dataset": row.dataset, "experiment": row.experiment, "name": name,
                   "protocol": pname, "quick": quick,
                   # what the row runs, inputs aside: a collected run must have been composed from the same
                   "settings": [f"experiment={row.experiment}", f"cv={p['cv']}", *p["overrides"], *row.overrides,
                                *((table.quick + p["quick"] + row.quick + [f"name={name}"]) if quick else [])]}
            if missing:
                job["status"] = "not run: needs " + "; ".join(
                    f"{k}=<path> (published: {table.inputs[k].get('published', 'see the table file')})"
                    + (f", or `medrun weights fetch library={' name='.join(table.inputs[k]['cached']['weights'].split())}`"
                       if table.inputs[k].get("cached") else "") for k in missing)
            elif absent:
                job["status"] = f"failed: {absent[0]}={inputs[absent[0]]} does not exist"
            else:
                sets = [s.replace("{path}", str(Path(inputs[k]).expanduser().resolve()))
                        for k in row.needs if k not in stand_ins + cached
                        for s in row.input_sets.get(k, table.inputs[k]["sets"])]
                sets += [o for k in stand_ins for o in table.inputs[k]["quick_without"]]
                sets += [o for k in cached for o in table.inputs[k]["cached"]["sets"]]
                job["overrides"] = [f"experiment={row.experiment}", f"cv={p['cv']}", *p["overrides"], *row.overrides,
                                    *sets, *((table.quick + p["quick"] + row.quick + [f"name={name}"]) if quick else []),
                                    f"paths.output_dir={output_dir}"]
                job["status"] = "planned"
                lacking = uncached_weights(job["overrides"])
                if lacking:
                    del job["overrides"]
                    job["status"] = "not run: needs " + "; ".join(
                        f"the {w.library} weights {w.name} (downloads are off: `medrun weights fetch library={w.library}"
                        f" name={w.name}` on a connected machine)" for w in lacking)
                if stand_ins:
                    job["stand_ins"] = [f"{k}: {' '.join(table.inputs[k]['quick_without'])}" for k in stand_ins]
            jobs.append(job)
    return jobs


def run_job(cfg: DictConfig) -> None:
    """Hydra's task function for one row x protocol: train it, record the run folder or the error."""
    from medrun.crossval import train

    quiet_known_noise()
    jobs_file = Path(str(cfg.jobs_file))
    job = json.loads(jobs_file.read_text())[int(cfg.job)]
    record = {"status": "failed"}
    try:
        run_dir, summary = train(compose("train", job["overrides"]))
        record = {"status": "ok" if summary is not None else "failed: the run wrote no cv_summary.json",
                  "run_dir": str(run_dir)}
    except Exception as e:  # one failing row must not stop the others
        record["status"] = f"failed: {one_line(e)}"
        print(f"medrun: error: {job['row']} ({job['protocol']}) failed: {record['status'][8:]}", file=sys.stderr)
    write_json(jobs_file.parent / "results" / f"{int(cfg.job)}.json", record)


def launch(jobs: list[dict], report_dir: Path, hydra_overrides: list[str]) -> None:
    """The planned jobs as one Hydra multirun (any launcher plugin); results land in report_dir/results/."""
    # interrupted runs first: they are the nearest to a result
    todo = sorted((i for i, j in enumerate(jobs) if j["status"] == "planned"), key=lambda i: "unfinished" not in jobs[i])
    if not todo:
        return
    jobs_file = report_dir / "jobs.json"
    write_json(jobs_file, jobs)
    run_multirun("reproduce", run_job, [f"job={','.join(map(str, todo))}", f"jobs_file={jobs_file}",
                                        f"hydra.sweep.dir={report_dir / 'hydra'}", *hydra_overrides])
    for i in todo:
        result = report_dir / "results" / f"{i}.json"
        jobs[i].update(json.loads(result.read_text()) if result.is_file()
                       else {"status": "failed: the job ended without a result (see its log under hydra/)"})


def _settings(overrides: list[str], keys: set[str] | None = None) -> dict:
    """The last value each key (each of `keys`) gets in a list of Hydra overrides, parsed by Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if keys is None or key in keys:
            out[key] = None if o.is_delete() else o.get_value_element_as_str()
    return out


# Keys that say where and how a run executed, not what it trained: a collected run may differ in these alone.
# (data.classes and data.mode are filled from the data into the saved config.)
EXECUTION_KEYS = ("paths", "name", "overrides", "logger", "callbacks.progress", "html_report", "data.root",
                  "data.cache", "data.cache_key", "data.num_workers", "data.decode_workers", "data.batched",
                  "data.classes", "data.mode", "data.anonymize_ids", "trainer.accelerator", "trainer.devices",
                  "trainer.num_nodes", "trainer.strategy", "trainer.log_every_n_steps", "resume", "run_dir",
                  "allow_unsafe_checkpoints", "performance", "cv.fold", "cv.splits_file", "optimize", "optimize_on",
                  "report", "save_probabilities")


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def setting_differences(job: dict, table: Table, config: dict) -> list[str]:
    """The settings in which a finished run's config differs from what the job's row and protocol compose to
    (execution keys and the row's input paths aside), as 'key: run X, row Y'. A setting added to medrun after the
    run, which the row leaves off (null, false, empty), is no difference: a new setting's off value is the old
    behaviour."""
    from medrun.config import override_key, to_plain

    inputs = {override_key(o) for spec in table.inputs.values() for o in spec["sets"]}
    inputs |= {override_key(o) for sets in table.row(job["row"]).input_sets.values() for o in sets}
    inputs |= {override_key(o) for spec in table.inputs.values() for o in (spec.get("cached") or {}).get("sets", [])}

    def skip(key: str) -> bool:
        return key in inputs or any(key == k or key.startswith(f"{k}.") for k in EXECUTION_KEYS)

    expected = {k: v for k, v in _flat(to_plain(compose("train", job["settings"]))).items() if not skip(k)}
    actual = {k: v for k, v in _flat(config).items() if not skip(k)}
    added_off = {k for k, v in expected.items() if k not in actual and v in (None, False, [], {})}
    return [f"{k}: run {actual.get(k, 'unset')}, row {expected.get(k, 'unset')}"
            for k in sorted((set(expected) | set(actual)) - added_off)
            if expected.get(k, "unset") != actual.get(k, "unset")]


def collect(jobs: list[dict], table: Table, folders: list[str]) -> list[str]:
    """Match finished runs under `folders` to rows: the same run name (a quick job only `<name>_quick` runs, a full job
    never them), protocol, and values of the keys that tell apart rows sharing an experiment (their `overrides`); the
    run that finished last (its cv_summary.json's time, not its folder name) wins, and it counts only when its
    composed settings are the row's (`setting_differences`): otherwise the job is not run, naming what differs.
    A job without a finished run gets `unfinished`: the newest interrupted run of the row's settings, to resume.
    Returns the folders skipped as unreadable, which never stop the collection."""
    runs, skipped = [], []
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise MedrunError(f"runs={folder}: no such folder")
        # an unfinished run has its splits.json but no cv_summary.json (Hydra's own folders hold a config.yaml too)
        for run in sorted({f.parent for pattern in ("cv_summary.json", "splits.json") for f in root.rglob(pattern)}):
            summary = run / "cv_summary.json"
            if not (run / "config.yaml").is_file():
                continue
            try:
                config = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))  # as saved: resolved
                finished = summary.is_file()
                if finished:
                    json.loads(summary.read_text())["mean"]
                runs.append((run, str(config["name"]), str(config["cv"]["name"]), list(config.get("overrides") or []),
                             finished, (summary if finished else run / "config.yaml").stat().st_mtime, config))
            except Exception as e:  # one stray folder must not abort the others
                skipped.append(f"{run}: {' '.join(str(e).split())[:120]}")
    for job in jobs:
        if job["status"] == REFERENCE:
            continue
        row, cv = table.row(job["row"]), table.protocols[job["protocol"]]["cv"]
        keys = {k for r in table.rows if r.experiment == row.experiment for k in _settings(r.overrides)}
        wanted = _settings(row.overrides, keys)
        mine = [(finished, when, str(run), config) for run, name, protocol, overrides, finished, when, config in runs
                if name == job["name"] and protocol == cv and _settings(overrides, keys) == wanted]
        found = [m[1:] for m in mine if m[0]]
        if found:
            _, run_dir, config = max(found, key=lambda f: f[:2])
            differs = setting_differences(job, table, config)
            if differs:
                job.update(status=f"not run: the finished run {run_dir} is not comparable, its settings differ from "
                                  f"the row's: {'; '.join(differs[:6])}" + (f" (+{len(differs) - 6} more)"
                                                                           if len(differs) > 6 else ""))
            else:
                job.update(status="ok", run_dir=run_dir, quick=job["name"].endswith(QUICK_SUFFIX))
                continue
        else:
            job.update(status=f"not run: no finished run of {job['name']} with cv={cv} under {', '.join(folders)}")
        interrupted = [(when, run_dir) for finished, when, run_dir, config in mine
                       if not finished and not setting_differences(job, table, config)]
        if interrupted:
            job["unfinished"] = max(interrupted)[1]
            job["status"] += f"; the interrupted run {job['unfinished']} has its settings (train_missing=true resumes it)"
    return skipped


def measure(summary: dict, key: str) -> tuple[float, float, int]:
    """(mean, std, n) of a cv_summary metric, or of `table/row/column` in one of its tables (Table 5.1). A repeated
    k-fold run gives the spread of its repeats' means (n = repeats), as a paper reporting "5 runs" does; otherwise
    n counts the folds that define the metric."""
    n = len(summary["folds"])
    repeats = summary.get("over_repeats")
    if repeats and key in repeats["mean"]:
        return repeats["mean"][key], repeats["std"][key], repeats["n"]
    if "/" in key:
        table, row, column = key.split("/", 2)
        try:
            cell = summary[table][row][column]
        except KeyError:
            raise MedrunError(f"{key} is not in this run's cv_summary.json") from None
        return cell["mean"], cell["std"], cell.get("n", n)
    if key not in summary["mean"]:
        raise MedrunError(f"metric {key!r} is not in this run's cv_summary.json; it has: {', '.join(sorted(summary['mean']))}")
    return summary["mean"][key], summary["std"][key], (summary.get("defined_in") or {}).get(key, n)


def per_fold(summary: dict, key: str) -> list[float] | None:
    """The metric of each fold (training) in fold order, for comparing two runs part by part; None for a table cell
    or where a fold lacks it."""
    values = [f["metrics"].get(key) for f in summary["folds"]] if "/" not in key else [None]
    return None if None in values else values


def test_parts(run_dir: Path) -> tuple[str | None, bool]:
    """A fingerprint of the run's test parts, fold by fold (splits.json): two runs with the same one tested their
    k-th folds on the same images, so their folds pair up; and whether every fold (training) shares one test part,
    as repeated trainings on one split do, where the k-th trainings of two runs have nothing more in common."""
    splits = run_dir / "splits.json"
    if not splits.is_file():
        return None, False
    tests = [sorted(f["test"]) for f in json.loads(splits.read_text())["folds"]]
    return hashlib.sha1(json.dumps(tests).encode()).hexdigest(), len(tests) > 1 and tests.count(tests[0]) == len(tests)


def trivial_for(summary: dict, key: str) -> tuple[str, float] | None:
    """The best trivial predictor's (name, mean) on the measure `key`: a cv_summary "trivial" row, or the all-empty
    reference row of a summary table (Table 5.1)."""
    if "/" in key:
        table, _, column = key.split("/", 2)
        cell = ((summary.get(table) or {}).get(ALL_EMPTY) or {}).get(column)
        return ("all-empty", cell["mean"]) if cell else None
    return best_trivial({n: r["mean"] for n, r in (summary.get("trivial") or {}).items()}, key, not lower_is_better(key))


def score(jobs: list[dict], table: Table) -> None:
    """Each finished job's metrics beside the paper's."""
    for job in jobs:
        if job["status"] != "ok":
            continue
        summary = json.loads((Path(job["run_dir"]) / "cv_summary.json").read_text())
        job["note"] = summary.get("note")
        job["test_parts"], job["one_test_part"] = test_parts(Path(job["run_dir"]))
        job["metrics"] = {}
        try:
            for m in table.row(job["row"]).metrics:
                mean, std, n = measure(summary, m.measure)
                c = compare_values(m.paper, m.std, m.n, mean, std, n, m.tolerance, table.paper_std)
                others = {**({"medrun": m.medrun} if m.medrun else {}), **m.also}
                c["definitions"] = {label: measure(summary, key)[0] for label, key in others.items()}
                c["best_trivial"] = trivial_for(summary, m.measure)
                c["per_fold"] = per_fold(summary, m.measure)
                job["metrics"][m.name] = c
        except MedrunError as e:
            job["status"] = f"failed: {e}"


def reproduce(table_name: str, inputs: dict | None = None, *, runs: list[str] | None = None, quick: bool = False,
              protocols: list[str] | None = None, output_dir: str | Path = "outputs",
              hydra_overrides: list[str] = (), train_missing: bool = False) -> Path:
    """Run or collect every row of a table and write report.md/json/png; returns the report folder.

    `train_missing`: collect from `runs` and `output_dir`, resume each row's interrupted run and train the rows
    that have no comparable run yet, so that the same command, run again after an interruption, goes on."""
    table = load_table(table_name)
    output_dir = Path(output_dir).expanduser().resolve()
    protocols = list(protocols or table.protocols)
    jobs = plan(table, dict(inputs or {}), quick, protocols, output_dir)
    report_dir = create_run_dir(output_dir / "reproduce", table.key)
    started = datetime.now().isoformat(timespec="seconds")
    folders, skipped = list(runs or []), []
    if train_missing and not any(output_dir.is_relative_to(Path(f).expanduser().resolve()) for f in folders):
        folders.append(str(output_dir))
    planned = [job["status"] for job in jobs]  # why a job cannot run (its data), which collect() overwrites
    if folders:
        skipped = collect(jobs, table, folders)
    if train_missing:
        for job, status in zip(jobs, planned):
            if job["status"] != "ok":
                job["status"] = status
                if job.get("unfinished") and status == "planned":
                    job["overrides"] = [f"resume={Path(job['unfinished']).resolve()}"]  # a launcher may run elsewhere
    if train_missing or not folders:
        launch(jobs, report_dir, list(hydra_overrides))
    score(jobs, table)
    write_report(report_dir, table, jobs, {"started": started, "quick": quick, "runs": folders or None,
                                           "train_missing": train_missing, "protocols": protocols,
                                           "skipped": skipped})
    write_page("reproduce", report_dir)
    return report_dir
