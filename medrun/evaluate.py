"""`medrun eval`: out-of-fold and test-set scoring of a finished run, with TTA, threshold search on
validation / out-of-fold predictions only, and fold ensembling. Writes <run>/eval/<time>/."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medrun.config_values import positive_index
from medrun.data.build import build_store
from medrun.data.images import pixel_digest
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.evaluation.intervals import bootstrap_intervals
from medrun.evaluation.reports import md, not_beaten
from medrun.evaluation.trivial import classification_baselines_by_fold, segmentation_baselines
from medrun.evaluation.tta import TTA
from medrun.inference import Run, load_run, with_data_overrides
from medrun.report import write_page
from medrun.runs import create_run_dir, write_json, write_text
from medrun.tasks import TASKS


def _fold_predictions(run: Run, store: SampleStore, part: str, tta: str):
    """Each fold's own model on its `part` ids, concatenated (out-of-fold when part == 'test')."""
    outs, owner = [], []
    for k, f in enumerate(run.splits["folds"]):
        outs.append(run.predict_ids(store, f[part], tta, folds=[k], with_plain=True))
        owner += [(i, f["fold"]) for i in f[part]]
    return [torch.cat(t) for t in zip(*outs)], owner


def evaluate_run(run_dir, tta: str = "none", threshold: str = "fixed", objective: str = "f1",
                 target_sensitivity: float = 0.9, min_areas=(0,), ensemble: str = "mean", data_overrides=(),
                 search_hook=None, device: str = "auto", allow_unsafe_checkpoints: bool = False,
                 ci_resamples: int = 1000, ci_level: float = 0.95) -> tuple[Path, dict]:
    """Score a finished run; `search_hook(ids)` (tests) sees the ids the threshold search uses. The last row
    gets bootstrap confidence intervals (`ci_resamples` resamples of the scored samples; 0: none).

    With `data_overrides` (another test set, e.g. data.root=...) every sample of that data is the test set;
    a threshold is still searched on the run's own validation / out-of-fold predictions.
    """
    _check_intervals(ci_resamples, ci_level)
    run = load_run(run_dir, device=device, allow_unsafe_checkpoints=allow_unsafe_checkpoints)
    _check_options(run.config, tta, threshold, ensemble)
    store = build_store(run.config)
    splits = run.splits
    left_out = 0
    if data_overrides:
        test_store = build_store(with_data_overrides(run.config, data_overrides))
        # images of data.translation_only classes are never predicted, so never scored
        n = len(run.config.data.classes) if run.config.data.get("translation_only") else None
        test_ids = [s.id for s in test_store.samples if n is None or s.label < n]
        # images the run trained or validated on (its training folder, a copy, renamed files): matched by their
        # decoded pixels, not their names; only the others are a test set, the rest are left out and counted
        seen = {i for f in splits["folds"] for part in ("train", "val") for i in f[part]}
        own = {pixel_digest(store.get(store.index[i])[0]) for i in seen if i in store.index}
        trained = {s.id for k, s in enumerate(test_store.samples) if pixel_digest(test_store.get(k)[0]) in own}
        if trained:
            kept = [i for i in test_ids if i not in trained]
            left_out = len(test_ids) - len(kept)
            if not kept:
                raise MedrunError(f"every sample of {' '.join(data_overrides)} was trained or validated on by this run: "
                                  "it is not a test set; give data that the run has not seen")
            test_ids = kept
    else:
        test_store = store
        test_ids = splits.get("fixed_test", [])
        if not test_ids and splits["protocol"] == "holdout":
            test_ids = splits["folds"][0]["test"]
    # The search never sees test data: out-of-fold predictions in k-fold, else each fold's validation part.
    search_part = "test" if splits["protocol"] == "kfold" else "val"
    search = None
    if threshold == "search":
        (s_plain, _, s_target), s_owner = _fold_predictions(run, store, search_part, "none")
        search_ids = [i for i, _ in s_owner]
        if test_store is store and set(search_ids) & set(test_ids):
            raise MedrunError("the threshold-search set overlaps the test set; refusing to search")
        if search_hook:
            search_hook(search_ids)
        search = (s_plain, s_target)
    if test_ids:
        folds = None if ensemble == "mean" else [0]
        e_plain, e_tta, e_target = run.predict_ids(test_store, test_ids, tta, folds, with_plain=True)
        e_ids, evaluated_on = test_ids, "test"
        e_fold = ["ensemble" if len(run.models) > 1 and ensemble == "mean" else "0"] * len(test_ids)
    else:  # no test set: report the out-of-fold predictions themselves
        (e_plain, e_tta, e_target), owner = _fold_predictions(run, store, search_part, tta)
        e_ids, e_fold, evaluated_on = [i for i, _ in owner], [str(k) for _, k in owner], "out_of_fold"

    trivial = _reference_rows(run, store, e_target, e_fold)
    out_dir = create_run_dir(run.dir, "eval")
    result = run.task.evaluate_predictions(run.config, out_dir, test_store, search, (e_plain, e_tta, e_target),
                                           e_ids, e_fold, tta=tta, threshold=threshold, objective=objective,
                                           target_sensitivity=target_sensitivity, min_areas=min_areas)
    notes = []
    if left_out:
        notes.append(f"{left_out} sample(s) of the given data were in the run's training or validation parts and are "
                     f"left out; scored on the other {len(e_ids)}")
    if splits["test_used_for_model_selection"]:
        notes.append("test set used for model selection (the run's protocol)")
    if evaluated_on != "test" and threshold == "search":
        notes.append("no test set: the searched threshold is scored on the predictions it was chosen on, so that "
                     "row is optimistic; give a test set with data.root=... for an unbiased number")
    notes += one_class_cut(result["postprocessing"].get("search") or {})
    resample = result.pop("resample", None)
    if resample and ci_resamples:
        last = list(result["rows"])[-1]
        names = [c for c in TABLE_COLUMNS if c in result["rows"][last]]
        result["interval"] = {"row": last, "level": ci_level, "resamples": ci_resamples, "method": "percentile",
                              "bounds": bootstrap_intervals(resample[0], resample[1], names, ci_level, ci_resamples)}
    result["decided_by"] = describe_decision(result["postprocessing"], run.config, run.task)
    result = {"run": str(run.dir), "evaluated_on": evaluated_on, "n": len(e_ids),
              "search_set": (search_part if search_part == "val" else "out_of_fold") if search else None,
              "ensemble": ensemble, "notes": notes, **result, "trivial": trivial}
    write_json(out_dir / "metrics.json", result)
    # where the decision comes from: predict takes it by default only from an eval of the run on its own data
    write_json(out_dir / "postprocessing.json",
               {**result["postprocessing"],
                "provenance": {"eval": out_dir.name, "scored_on": list(data_overrides) or "the run's own data",
                               "searched_on": result["search_set"], "folds": [f["fold"] for f in splits["folds"]]}})
    write_text(out_dir / "summary.md", _table(result))
    write_page("run", run.dir)
    return out_dir, result


def _reference_rows(run: Run, store: SampleStore, target: torch.Tensor, owner: list[str]) -> dict:
    """What trivial predictors score on the evaluated images (all-empty / all-foreground masks; the majority class
    of the training part of the fold behind each prediction, fold 0's for an ensemble)."""
    cfg = run.config
    classes = [str(c) for c in cfg.data.classes]
    if run.spatial:
        rows = segmentation_baselines(target, classes, float(cfg.task.empty_score),
                                      str(cfg.task.get("absent_classes", "ignore")))
        return {"all-empty": rows["all-empty"]} if cfg.task.name == "cascade" else rows
    if cfg.task.name != "classification":
        return {}
    folds = {str(f["fold"]): f for f in run.splits["folds"]}
    train = {k: np.stack([np.asarray(store.get(store.index[i])[1]) for i in f["train"]]) for k, f in folds.items()}
    train["ensemble"] = train[str(run.splits["folds"][0]["fold"])]
    return classification_baselines_by_fold(train, list(owner), target.numpy(), classes,
                                            cfg.data.get("mode") == "multilabel", positive_index(cfg.data),
                                            bool(cfg.data.get("ordinal")))


def _check_intervals(ci_resamples, ci_level) -> None:
    if not isinstance(ci_resamples, int) or isinstance(ci_resamples, bool) or ci_resamples < 0:
        raise MedrunError(f"ci_resamples={ci_resamples!r}; give a whole number of bootstrap resamples "
                          "(0: no intervals)")
    if not isinstance(ci_level, (int, float)) or not 0 < ci_level < 1:
        raise MedrunError(f"ci_level={ci_level!r}; give a confidence level between 0 and 1, e.g. 0.95")


def _check_options(cfg, tta, threshold, ensemble) -> None:
    """Bad options fail before anything is computed or written."""
    if tta not in TTA:
        raise MedrunError(f"tta={tta!r}; valid: {', '.join(TTA)}")
    if threshold not in ("fixed", "search"):
        raise MedrunError(f"threshold={threshold!r}; valid: fixed, search")
    if ensemble not in ("mean", "none"):
        raise MedrunError(f"ensemble={ensemble!r}; valid: mean, none")
    if threshold == "search" and not TASKS.get(cfg.task.name).searchable(cfg):
        raise MedrunError("threshold=search applies to binary tasks; multi-class outputs use argmax")


def describe_decision(post: dict, cfg, task) -> str:
    """eval's post-processing in words: TTA, how a label or mask is decided, minimum area, and the search."""
    words = ["no TTA" if post.get("tta", "none") == "none" else f"TTA {post['tta']}"]
    threshold, multilabel = post.get("threshold"), cfg.data.get("mode") == "multilabel"
    if isinstance(threshold, list) or multilabel:
        words.append(f"per-label thresholds {threshold or 0.5}")
    elif threshold is None or not task.searchable(cfg):
        words.append("argmax")
    elif cfg.task.name == "classification":
        words.append(f"{cfg.data.classes[positive_index(cfg.data)]} where its probability >= {threshold:.4g}")
    else:
        words.append(f"foreground where its probability >= {threshold:.4g}")
    if post.get("min_area"):
        h, w = post["min_area_at_size"]
        words.append(f"masks under {post['min_area']} pixels (at {h}x{w}) emptied")
    if post.get("decision_threshold") is not None:
        words.append(f"masks emptied where the classifier's probability < {post['decision_threshold']:.4g}")
    found = post.get("search")
    if found:
        words.append(f"threshold searched for {found['objective']} (on the search set: sensitivity "
                     f"{found['sensitivity']:.3f}, specificity {found['specificity']:.3f})")
    elif "search_dice" in post:
        words.append(f"searched for Dice (on the search set: {post['search_dice']:.4f})")
    return "; ".join(words)


def one_class_cut(found: dict) -> list[str]:
    """A note when the searched decision threshold labels every search sample alike, which F1 prefers for a
    majority positive class and a weak model: the row then equals the majority-class reference."""
    if {found.get("sensitivity"), found.get("specificity")} != {0.0, 1.0}:
        return []
    return [f"the searched threshold puts every search sample in one class (sensitivity {found['sensitivity']:.0f}, "
            f"specificity {found['specificity']:.0f} there): that cut maximises objective={found['objective']} on "
            "those predictions; objective=youden weighs both classes"]


TABLE_COLUMNS = {"dice": "Dice (per image)", "dice_micro": "Dice (dataset)", "jaccard": "IoU (per image)",
                 "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1_macro": "F1 (macro)",
                 "auc_macro": "AUC (macro)", "kappa_quadratic": "kappa (quadratic)",
                 "sensitivity_positive": "sensitivity ({positive})", "specificity_positive": "specificity ({positive})"}


def _table(result: dict) -> str:
    """The post-processing table: rows argmax / searched threshold / TTA."""
    rows = result["rows"]
    cols = [c for c in TABLE_COLUMNS if any(c in m for m in rows.values())]
    post = result["postprocessing"]
    searched = (f"thresholds searched on the {result['search_set'].replace('_', '-')} predictions"
                if result["search_set"] else "fixed thresholds (no search)")
    lines = [f"# Evaluation of {md(result['run'])}", "",
             f"Scored on the {result['evaluated_on'].replace('_', '-')} set ({result['n']} predictions); {searched}.",
             f"Post-processing: {result.get('decided_by') or json.dumps(post)} (postprocessing.json has the numbers).",
             "",
             *(f"> Note: {md(n)}." for n in result["notes"]), *([""] if result["notes"] else []),
             "| post-processing | " + " | ".join(md(TABLE_COLUMNS[c].format(positive=result.get("positive_class")))
                                                for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    names = {"argmax": "ArgMax", "threshold": "searched threshold", "tta": f"TTA ({post['tta']})"}
    for name, m in rows.items():
        lines.append(f"| {names[name]} | " + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in cols) + " |")
    interval = result.get("interval")
    if interval:
        lines.append(f"| *{interval['level']:.0%} CI of {names[interval['row']]}* | " + " | ".join(
            "[{:.4f}, {:.4f}]".format(*interval["bounds"][c]) if c in interval["bounds"] else "-" for c in cols) + " |")
    for name, m in (result.get("trivial") or {}).items():  # references on the same images, never methods
        lines.append(f"| *reference: {md(name)}* | " + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in cols)
                     + " |")
    final = rows[list(rows)[-1]]
    beaten = not_beaten({"mean": final, "trivial": {n: {"mean": m} for n, m in (result.get("trivial") or {}).items()}},
                        cols)
    lines += ["", *(f"> The last row does not beat the trivial row {md(name)} on {md(m)} ({value:.4f} vs {ours:.4f})."
                    for m, name, value, ours in beaten)] if beaten else []
    return "\n".join(lines) + "\n"
