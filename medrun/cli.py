"""Command line: argv -> command + Hydra overrides -> medrun.api; user errors become one line, exit 2."""
from __future__ import annotations

import json
import logging
import os
import sys

from medrun.allocator import keep_freed_memory
from medrun.console import quiet_known_noise, show_medrun_messages
from medrun.errors import MedrunError

def usage() -> str:
    width = 29  # a usage longer than the column puts its description on the next line
    commands = "\n".join(f"  {use:<{width}}" + (f"\n  {'':<{width}}" if len(use) >= width else "") + f"{what}"
                         for _, use, what in COMMANDS.values())
    return f"""usage: medrun [--debug] [-m] COMMAND [key=value ...]

Config-driven experiment runner for medical image deep learning.

commands:
{commands}
  -m train [sweep overrides]   Hydra multirun: one run folder per job, e.g. seed=1,2,3

options:
  -m, --multirun   expand comma lists / range() into several jobs
  --cfg            print the composed config and exit
  --debug          show tracebacks (also HYDRA_FULL_ERROR=1)
  -h, --help       this help; `medrun train --help` lists the config groups

Trust: allow_unsafe_checkpoints=true (or MEDRUN_ALLOW_UNSAFE_CHECKPOINTS=1) on the current command is the
only way to load checkpoints that need full unpickling; a run folder's own config cannot ask for it.

examples:
  medrun train experiment=quickstart
  medrun train experiment=sharp_unet_isbi data.root=/data/isbi2012 cv.folds=5
  medrun -m train experiment=quickstart seed=1,2,3
"""


def _train_help() -> str:
    from medrun.config import groups, options

    lines = ["usage: medrun [-m] train [key=value ...]", "",
             "Pick one option per group (group=option) or an experiment, then override any key.", ""]
    for g in groups():
        lines.append(f"  {g}: {', '.join(options(g))}")
    lines += ["", "Common keys: seed, data.root, data.image_size, data.batch_size, cv.folds (cv=kfold),",
              "trainer.max_epochs, trainer.precision, trainer.deterministic, paths.output_dir.",
              "Outputs: outputs/<name>/<time>/.",
              "`medrun list GROUP` says what each option is."]
    return "\n".join(lines)


def _print_train_result(run_dir, summary) -> None:
    from rich.console import Console

    from medrun.api import summary_table

    console = Console()
    if summary is not None:
        console.print(summary_table(summary))
        console.print(f"run folder: {run_dir}")
        console.print(f"next: medrun eval run={run_dir}  (then explain, predict or export it)", highlight=False,
                      soft_wrap=True)


def _train(overrides: list[str], print_cfg: bool) -> int:

    from medrun.config import compose

    cfg = compose("train", overrides)  # before the heavy imports: config mistakes fail fast
    if print_cfg:
        from medrun.api import composed_config

        text, note = composed_config(cfg)
        if note:
            print(f"medrun: note: data not listed ({note}); data.classes and data.mode are filled from the data "
                  "when training starts", file=sys.stderr)
        print(text)
        return 0
    from medrun.api import train

    _print_train_result(*train(cfg))
    return 0


def _multirun(command: str, overrides: list[str]) -> int:
    if command != "train":
        raise MedrunError(f"-m works with train only, not {command!r}")
    from medrun.api import sweep

    sweep_dir = sweep(overrides)
    summary = json.loads((sweep_dir / "multirun_summary.json").read_text())
    print((sweep_dir / "multirun_summary.md").read_text())
    print(f"sweep folder: {sweep_dir}")
    if summary["failed"]:
        jobs = {r["job"]: r for r in summary["jobs"]}
        print(f"medrun: {len(summary['failed'])} of {len(summary['jobs'])} jobs failed:", file=sys.stderr)
        for n in summary["failed"]:
            print(f"  {' '.join(jobs[n]['overrides'])}: {jobs[n].get('error', '')}", file=sys.stderr)
        return 1
    return 0


def _compare(args: list[str]) -> int:
    from medrun.api import compare

    out, _ = compare(args)
    print((out / "compare.md").read_text())
    print(f"comparison folder: {out}")
    return 0


def _aggregate(args: list[str]) -> int:
    if len(args) != 1:
        raise MedrunError("usage: medrun aggregate <run folder>")
    from medrun.api import aggregate_run

    _print_train_result(args[0], aggregate_run(args[0]))
    return 0


def _list(args: list[str]) -> int:
    """Every group's options on one line each; a named group's options one per line, with what each is."""
    from medrun.config import describe, groups, options

    if not args:
        for g in groups():
            print(f"{g}: {', '.join(options(g))}")
        return 0
    aliases = {"experiments": "experiment", "models": "model", "datasets": "data", "trainers": "trainer",
               "loggers": "logger"}
    for g in (aliases.get(a, a) for a in args):
        names = options(g)
        width = max(map(len, names))
        print(f"{g}:")
        for name in names:
            print(f"  {name:<{width}}  {describe(g, name)}".rstrip())
            if g == "experiment":
                from medrun.api import experiment_status

                status = experiment_status(name)
                print(f"  {'':<{width}}  data={status['dataset']}: {status['data']}; weights: {status['weights']}")
    return 0


def _data_check(overrides: list[str]) -> int:
    from medrun.api import check_data
    from medrun.config import compose

    cfg = compose("train", overrides)
    report = check_data(cfg)
    problems = report.pop("problems")
    print(json.dumps(report, indent=2))
    if problems:
        where = f"data.csv={cfg.data.csv}" if cfg.data.get("csv") else f"data.root={cfg.data.root}"
        print(f"medrun: error: {len(problems)} bad sample(s) in {where}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    identical = report["identical_images"]
    if identical["sets"]:
        print(f"note: {identical['sets']} set(s) of identical images under different ids (e.g. "
              f"{', '.join(identical['examples'][0])}): a split can put copies on both sides; remove the copies or "
              "give them one group (e.g. data.group_column)")
    print(f"ok: {report['samples']} samples read without problems")
    return 0


def _summary(overrides: list[str]) -> int:
    from medrun.api import compose, model_summary

    print(model_summary(compose("train", overrides)))
    return 0


def _eval(args: list[str]) -> int:
    from omegaconf import ListConfig, OmegaConf

    from medrun.config import compose
    from medrun.config_values import get_float, get_int

    data = [a for a in args if a.startswith("data.")]
    opts = compose("eval", [a for a in args if not a.startswith("data.")])
    from medrun.api import evaluate

    areas = opts.min_areas if isinstance(opts.min_areas, (list, ListConfig)) else [opts.min_areas]
    min_areas = [get_int(OmegaConf.create({"min_areas": a}), "min_areas", minimum=0) for a in areas]
    sensitivity = get_float(opts, "target_sensitivity", 0, 1.0000001)
    out_dir, result = evaluate(opts.run, tta=opts.tta, threshold=opts.threshold, objective=opts.objective,
                               target_sensitivity=sensitivity, min_areas=min_areas,
                               ensemble=opts.ensemble, data_overrides=data, device=opts.device,
                               allow_unsafe_checkpoints=bool(opts.allow_unsafe_checkpoints),
                               ci_resamples=opts.ci_resamples, ci_level=opts.ci_level)
    print((out_dir / "summary.md").read_text())
    print(f"evaluation folder: {out_dir}")
    return 0


def _predict(args: list[str]) -> int:
    from medrun.config import compose

    opts = compose("predict", args)
    from medrun.api import predict

    report = predict(opts.run, opts.input, opts.output, save_probabilities=bool(opts.save_probabilities),
                     tta=opts.tta, threshold=opts.threshold, device=opts.device,
                     allow_unsafe_checkpoints=bool(opts.allow_unsafe_checkpoints), format=opts.format,
                     postprocessing=None if opts.postprocessing is None else str(opts.postprocessing))
    print(f"{report['processed']} input(s) predicted into {opts.output}; post-processing: {report['postprocessing']}")
    if report["failed"]:
        print(f"medrun: error: {len(report['failed'])} input(s) could not be read (listed in report.json):",
              file=sys.stderr)
        for item in report["failed"]:
            print(f"  {item['error']}", file=sys.stderr)
        return 1
    return 0


def _export(args: list[str]) -> int:
    from medrun.api import export
    from medrun.config import compose

    opts = compose("export", args)
    serving = export(opts.run, format=str(opts.format), fold=opts.fold, output=opts.output,
                     postprocessing=None if opts.postprocessing is None else str(opts.postprocessing),
                     allow_unsafe_checkpoints=bool(opts.allow_unsafe_checkpoints))
    check = serving["check"]
    print(f"exported folds {serving['folds']} as {serving['format']} to {serving['folder']} (serving.json says how to "
          f"call it); outputs match PyTorch within {check['max_abs_difference']:.1g} on {check['images']} images")
    return 0


def _explain(args: list[str]) -> int:
    from medrun.config import compose
    from medrun.config_values import get_int

    # `clusters=k-means,birch` reads as a list here (Hydra would take a comma list for a sweep)
    args = [f"{a.split('=', 1)[0]}=[{a.split('=', 1)[1]}]" if a.startswith(("clusters=", "compare=", "classes=")) and "[" not in a
            else a for a in args]
    opts = compose("explain", args)
    from medrun.api import explain

    out_dir, _ = explain(opts.run, method=opts.method, layer=opts.layer, n=get_int(opts, "n", minimum=1),
                         target=opts.target, compare=list(opts.compare), clusters=list(opts.clusters),
                         k=get_int(opts, "k", minimum=2),
                         embed=opts.embed, dim=opts.dim, pool=opts.pool, feature_layer=opts.feature_layer,
                         fold=int(opts.fold), device=opts.device, seed=int(opts.seed),
                         cluster_classes=list(opts.classes) if opts.get("classes") else None,
                         allow_unsafe_checkpoints=bool(opts.allow_unsafe_checkpoints))
    print((out_dir / "summary.md").read_text())
    print(f"explanation folder: {out_dir}")
    return 0


def _reproduce(args: list[str]) -> int:
    from medrun.api import reproduce, reproduce_cost, reproduce_tables

    if not args or args[0] == "list":
        print("\n\n".join(reproduce_tables()))
        return 0
    table, opts, inputs, hydra_overrides = args[0], {}, {}, []
    for a in args[1:]:
        key, sep, value = a.partition("=")
        if key.startswith("hydra"):  # launcher plugins: hydra/launcher=joblib hydra.launcher.n_jobs=2
            hydra_overrides.append(a)
        elif not sep or not value:
            raise MedrunError(f"{a!r}: expected key=value (see `medrun reproduce list` for a table's inputs)")
        elif key.startswith(("data.", "weights.")):
            inputs[key] = value
        elif key in ("runs", "quick", "protocols", "paths.output_dir", "estimate", "train_missing"):
            opts[key] = value
        else:
            raise MedrunError(f"unknown option {key!r}; valid: data.<input>=, weights.<input>=, runs=, quick=, "
                              "protocols=, estimate=, train_missing=, paths.output_dir=, hydra/launcher=...")
    for key in ("quick", "estimate", "train_missing"):
        if opts.get(key, "false") not in ("true", "false"):
            raise MedrunError(f"{key}={opts[key]}: use true or false")
    if opts.get("estimate") == "true":  # what the rows would cost; nothing trains
        print(reproduce_cost(table, inputs)[1])
        return 0
    report = reproduce(table, inputs, runs=opts["runs"].split(",") if "runs" in opts else None,
                       quick=opts.get("quick") == "true",
                       protocols=opts["protocols"].split(",") if "protocols" in opts else None,
                       output_dir=opts.get("paths.output_dir", os.environ.get("MEDRUN_OUTPUT_DIR", "outputs")),
                       hydra_overrides=hydra_overrides, train_missing=opts.get("train_missing") == "true")
    print((report / "report.md").read_text())
    print(f"report folder: {report}")
    rows = json.loads((report / "report.json").read_text())["rows"]
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


def _cache(args: list[str]) -> int:
    from medrun.api import caches, clear_caches

    usage_line = "usage: medrun cache list|clear [key=KEY] [paths.cache_dir=DIR]"
    if not args or args[0] not in ("list", "clear"):
        raise MedrunError(usage_line)
    opts = dict(a.partition("=")[::2] for a in args[1:])
    if any(k not in ("key", "paths.cache_dir") or not v for k, v in opts.items()) or (args[0] == "list" and "key" in opts):
        raise MedrunError(usage_line)
    cache_dir = opts.get("paths.cache_dir") or os.environ.get("MEDRUN_CACHE_DIR")
    if args[0] == "clear":
        root, gone = clear_caches(cache_dir, opts.get("key"))
        print(f"deleted {len(gone)} cache(s) from {root}")
        return 0
    root, found = caches(cache_dir)
    print(f"{len(found)} cache(s) in {root}, {sum(c['megabytes'] for c in found):.1f} MB")
    for c in found:
        print(f"  {c['key']}  {c['samples']} samples  {c['megabytes']} MB  {c['reader']} {c['image_size']}  "
              f"created {c['created']}, last used {c['last_used']}")
    return 0


def _resume(args: list[str]) -> int:
    trust = {"allow_unsafe_checkpoints=true": True, "allow_unsafe_checkpoints=false": False}
    folders = [a for a in args if a not in trust]
    if len(folders) != 1:
        raise MedrunError("usage: medrun resume <run folder> [allow_unsafe_checkpoints=true]")
    from medrun.api import resume

    _print_train_result(*resume(folders[0], any(trust.get(a, False) for a in args)))
    return 0


def _data(args: list[str]) -> int:
    if args[:1] == ["check"]:
        return _data_check(args[1:])
    if len(args) < 2 or args[0] != "fetch":
        raise MedrunError("usage: medrun data check data=<name> data.root=<path> | medrun data fetch <name> [...]")
    from medrun.api import dataset_source, fetch_dataset

    name, opts = args[1], dict(a.partition("=")[::2] for a in args[2:])
    if name == "medmnist":
        if set(opts) - {"name", "size", "root"} or not opts.get("name") or not opts.get("root"):
            raise MedrunError("usage: medrun data fetch medmnist name=<set> [size=28|64|128|224] root=<dir>")
        size = opts.get("size", "28")
        if not size.isdigit():
            raise MedrunError(f"size={size!r}; valid: 28, 64, 128, 224")
        path = fetch_dataset(opts["name"], int(size), opts["root"])
        print(f"ok: {path} (MD5 checked); train with data=medmnist data.root={path.parent} data.file={path.name}")
        return 0
    print(dataset_source(name))
    if set(opts) - {"data.root"}:
        raise MedrunError(f"usage: medrun data fetch {name} [data.root=<the folder you unpacked>]")
    if not opts:
        print(f"then: medrun data fetch {name} data.root=<the folder you unpacked> (reads every sample)")
        return 0
    return _data_check([f"data={name}", f"data.root={opts['data.root']}"])


def _weights(args: list[str]) -> int:
    from medrun.api import fetch_weights, list_weights

    if args[:1] == ["fetch"] and args[1:]:
        for weights, path in fetch_weights(args[1:]):
            print(f"{weights.library} {weights.name}: {path} ({path.stat().st_size / 2**20:.1f} MB)")
        return 0
    if args == ["list"]:
        for w in list_weights():
            where = f"{w['file']} ({w['megabytes']} MB)" if w["file"] else "not cached"
            print(f"{w['library']} {w['name']}: {where}; needed by {', '.join(w['experiments'])}")
        return 0
    raise MedrunError("usage: medrun weights fetch experiment=<name>[,<name>...] [overrides] | "
                      "medrun weights fetch library=timm|smp|torchvision name=<weights> | medrun weights list")


# name -> (handler(args), usage, description in `medrun --help`); dispatch, usage and "valid:" lists come from here.
COMMANDS = {
    "train": (lambda args: _train(args, False), "train [overrides]",
              "train every fold of an experiment into a new run folder"),
    "list": (_list, "list [GROUP]", "config options; a named group with what each option is"),
    "data": (_data, "data check|fetch [overrides]",
             "check: read every sample, list bad files; fetch: get a public set (medmnist), or where to get it"),
    "weights": (_weights, "weights fetch|list [experiment=NAME]",
                "pretrained weights into the libraries' caches (HF_HOME, TORCH_HOME); what is cached"),
    "cache": (_cache, "cache list|clear [key=KEY]", "the persistent data caches (data.cache=disk) and their sizes"),
    "summary": (_summary, "summary [overrides]", "layer table with trainable and frozen parameter counts"),
    "resume": (_resume, "resume RUN_FOLDER", "continue an interrupted run (also: train resume=RUN_FOLDER)"),
    "eval": (_eval, "eval run=RUN [tta=flips|d4] [threshold=search] [data.root=TEST]",
             "score a run: out-of-fold, test set, TTA, thresholds, 95% CIs"),
    "predict": (_predict, "predict run=RUN input=PATH output=DIR",
                "the run's fold ensemble on new images or DICOM files"),
    "export": (_export, "export run=RUN format=onnx|torchscript [fold=k|ensemble] [output=DIR]",
               "the model for serving stacks, with serving.json"),
    "aggregate": (_aggregate, "aggregate RUN_FOLDER",
                  "cv_summary of a run whose folds ran as separate jobs (cv.fold=k)"),
    "compare": (_compare, "compare RUN RUN ...", "finished runs side by side on the same folds, paired tests"),
    "reproduce": (_reproduce, "reproduce TABLE [data.<input>=PATH ...] [quick=true] [runs=FOLDER] [train_missing=true] [estimate=true]",
                  "a paper table re-measured beside the paper's numbers; `reproduce list`"),
    "explain": (_explain, "explain run=RUN [method=gradcam] [clusters=k-means,birch,agglomerative k=4 embed=tsne]",
                "Grad-CAM heatmaps, their faithfulness, feature clusters"),
}


def run(argv: list[str]) -> int:
    flags = {"--debug", "-m", "--multirun", "--cfg", "-h", "--help"}
    opts = [a for a in argv if a in flags]
    rest = [a for a in argv if a not in flags]
    helping = "-h" in opts or "--help" in opts
    if not rest:
        print(usage())
        return 0 if helping else 2
    command, args = rest[0], rest[1:]
    if helping:
        print(_train_help() if command == "train" else usage())
        return 0
    if "-m" in opts or "--multirun" in opts:
        return _multirun(command, args)
    if command == "train" and "--cfg" in opts:
        return _train(args, True)
    if command not in COMMANDS:
        raise MedrunError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)} (see medrun --help)")
    return COMMANDS[command][0](args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    keep_freed_memory()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    quiet_known_noise()
    show_medrun_messages()
    try:
        code = run(argv)
    except MedrunError as e:
        if debug:
            raise
        print(f"medrun: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("medrun: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # output piped into `head` or a pager that quit early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        code = 0
    except Exception as e:
        if debug:
            raise
        print(f"medrun: error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
