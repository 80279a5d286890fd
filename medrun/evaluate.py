"""`medrun eval`: out-of-fold and test-set scoring of a finished run, with TTA, threshold search on
validation / out-of-fold predictions only, and fold ensembling. Writes <run>/eval/<time>/."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from medrun.data.build import build_store
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from medrun.evaluation import overlays
from medrun.evaluation.classification import classification_scores, save_curves
from medrun.evaluation.metrics import confusion, per_image, scores
from medrun.evaluation.thresholds import search_decision_threshold, search_pixel_threshold
from medrun.evaluation.tta import TTA
from medrun.inference import Run, load_run, with_data_overrides
from medrun.runs import create_run_dir, write_json, write_text
from medrun.tasks.classification import write_predictions


def _fold_predictions(run: Run, store: SampleStore, part: str, tta: str):
    """Each fold's own model on its `part` ids, concatenated (out-of-fold when part == 'test')."""
    outs, owner = [], []
    for k, f in enumerate(run.splits["folds"]):
        outs.append(run.predict_ids(store, f[part], tta, folds=[k], with_plain=True))
        owner += [(i, f["fold"]) for i in f[part]]
    return [torch.cat(t) for t in zip(*outs)], owner


def evaluate_run(run_dir, tta: str = "none", threshold: str = "fixed", objective: str = "f1",
                 target_sensitivity: float = 0.9, min_areas=(0,), ensemble: str = "mean", data_overrides=(),
                 search_hook=None, device: str = "auto", allow_unsafe_checkpoints: bool = False) -> tuple[Path, dict]:
    """Score a finished run; `search_hook(ids)` (tests) sees the ids the threshold search uses.

    With `data_overrides` (another test set, e.g. data.root=...) every sample of that data is the test set;
    a threshold is still searched on the run's own validation / out-of-fold predictions.
    """
    run = load_run(run_dir, device=device, allow_unsafe_checkpoints=allow_unsafe_checkpoints)
    _check_options(run.config, tta, threshold, ensemble)
    store = build_store(run.config)
    splits = run.splits
    if data_overrides:
        test_store = build_store(with_data_overrides(run.config, data_overrides))
        test_ids = [s.id for s in test_store.samples]
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

    out_dir = create_run_dir(run.dir, "eval")
    fn = _evaluate_segmentation if run.spatial else _evaluate_classification
    result = fn(run.config, out_dir, test_store, search, (e_plain, e_tta, e_target), e_ids, e_fold,
                tta=tta, threshold=threshold, objective=objective, target_sensitivity=target_sensitivity,
                min_areas=min_areas)
    notes = []
    if splits["test_used_for_model_selection"]:
        notes.append("test set used for model selection (the run's protocol)")
    if evaluated_on != "test" and threshold == "search":
        notes.append("no test set: the searched threshold is scored on the predictions it was chosen on, so that "
                     "row is optimistic; give a test set with data.root=... for an unbiased number")
    result = {"run": str(run.dir), "evaluated_on": evaluated_on, "n": len(e_ids),
              "search_set": (search_part if search_part == "val" else "out_of_fold") if search else None,
              "ensemble": ensemble, "notes": notes, **result}
    write_json(out_dir / "metrics.json", result)
    write_json(out_dir / "postprocessing.json", result["postprocessing"])
    write_text(out_dir / "summary.md", _table(result))
    return out_dir, result


def _check_options(cfg, tta, threshold, ensemble) -> None:
    """Bad options fail before anything is computed or written."""
    if tta not in TTA:
        raise MedrunError(f"tta={tta!r}; valid: {', '.join(TTA)}")
    if threshold not in ("fixed", "search"):
        raise MedrunError(f"threshold={threshold!r}; valid: fixed, search")
    if ensemble not in ("mean", "none"):
        raise MedrunError(f"ensemble={ensemble!r}; valid: mean, none")
    binary = len(cfg.data.classes) == 2 and cfg.data.get("mode") != "multilabel"
    if threshold == "search" and not binary:
        raise MedrunError("threshold=search applies to binary tasks; multi-class outputs use argmax")


def _binary_masks(probs, t, min_area):
    masks = probs[:, 0] >= t
    if min_area:
        masks[masks.flatten(1).sum(1) < min_area] = False
    return masks


def _evaluate_segmentation(cfg, out_dir, store, search, evaluation, ids, folds, *, tta, threshold, objective,
                           target_sensitivity, min_areas):
    classes = [str(c) for c in cfg.data.classes]
    binary = len(classes) == 2
    empty = float(cfg.task.empty_score)
    # min_area counts pixels at the model's input size (data.image_size); predict scales it to each input
    post = {"tta": tta, "threshold": float(cfg.task.threshold), "min_area": 0,
            "min_area_at_size": [int(v) for v in cfg.data.image_size]}
    if threshold == "search":
        found = search_pixel_threshold(search[0][:, 0], search[1], min_areas=tuple(min_areas), empty_score=empty)
        post.update(threshold=found["threshold"], min_area=found["min_area"], search_dice=found["dice"])
    plain, augmented, target = evaluation

    def score(probs, t, area):
        pred = _binary_masks(probs, t, area).float()[:, None] if binary else probs
        counts = confusion(pred, target, binary, 0.5)
        absent = str(cfg.task.get("absent_classes", "ignore"))
        return scores(*counts, classes, empty, absent), per_image(*counts, empty, absent)

    rows = {"argmax": score(plain, 0.5, 0)}
    if threshold == "search":
        rows["threshold"] = score(plain, post["threshold"], post["min_area"])
    if tta != "none":
        rows["tta"] = score(augmented, post["threshold"], post["min_area"])
    final = list(rows)[-1]
    per = rows[final][1]
    with open(out_dir / "per_sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "fold", "predicted_fraction", "dice", "jaccard"])
        probs = augmented if final == "tta" else plain
        pred = _binary_masks(probs, post["threshold"], post["min_area"]) if binary else probs.argmax(1) > 0
        for i, sid in enumerate(ids):
            w.writerow([sid, folds[i], f"{pred[i].float().mean():.6f}", f"{per['dice'][i]:.6f}", f"{per['jaccard'][i]:.6f}"])
    order = np.argsort(per["dice"].numpy(), kind="stable")
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    probs = augmented if final == "tta" else plain
    pred = _binary_masks(probs, post["threshold"], post["min_area"]).long() if binary else probs.argmax(1)
    for name, i in picks.items():
        image, _ = store.get(store.index[ids[i]])
        overlays.save(out_dir / f"overlay_{name}.png", image, target[i].numpy(), pred[i].numpy(),
                      f"{name}: {ids[i]} (Dice {per['dice'][i]:.3f})")
    return {"rows": {k: v[0] for k, v in rows.items()}, "postprocessing": post,
            "overlays": {k: ids[i] for k, i in picks.items()}}


def _evaluate_classification(cfg, out_dir, store, search, evaluation, ids, folds, *, tta, threshold, objective,
                             target_sensitivity, min_areas):
    classes = [str(c) for c in cfg.data.classes]
    multilabel = cfg.data.mode == "multilabel"
    plain, augmented, target = (t.numpy() for t in evaluation)
    # Multi-label runs decide each label with the run's own task.thresholds (0.5 where unset).
    fixed = list(cfg.task.thresholds) if multilabel and cfg.task.get("thresholds") else None
    post = {"tta": tta, "threshold": fixed}
    if threshold == "search":
        found = search_decision_threshold(search[1].numpy(), search[0].numpy()[:, 1], objective, target_sensitivity)
        post.update(threshold=found["threshold"], search=found)
    rows = {"argmax": classification_scores(target, plain, classes, multilabel, fixed)[0]}
    if threshold == "search":
        rows["threshold"] = classification_scores(target, plain, classes, multilabel, post["threshold"])[0]
    if tta != "none":
        rows["tta"] = classification_scores(target, augmented, classes, multilabel, post["threshold"])[0]
    probs = augmented if tta != "none" else plain
    write_predictions(out_dir / "per_sample.csv", ids, target, probs, classes, multilabel, post["threshold"], folds)
    save_curves(target, probs, classes, multilabel, out_dir)
    return {"rows": rows, "postprocessing": post}


TABLE_COLUMNS = {"dice": "Dice (per image)", "dice_micro": "Dice (dataset)", "jaccard": "IoU (per image)",
                 "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1_macro": "F1 (macro)",
                 "auc_macro": "AUC (macro)"}


def _table(result: dict) -> str:
    """The post-processing table: rows argmax / searched threshold / TTA."""
    rows = result["rows"]
    cols = [c for c in TABLE_COLUMNS if c in next(iter(rows.values()))]
    post = result["postprocessing"]
    searched = (f"thresholds searched on the {result['search_set'].replace('_', '-')} predictions"
                if result["search_set"] else "fixed thresholds (no search)")
    lines = [f"# Evaluation of {result['run']}", "",
             f"Scored on the {result['evaluated_on'].replace('_', '-')} set ({result['n']} predictions); {searched}.",
             f"Post-processing: {json.dumps(post)}", "",
             *(f"> Note: {n}." for n in result["notes"]), *([""] if result["notes"] else []),
             "| post-processing | " + " | ".join(TABLE_COLUMNS[c] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    names = {"argmax": "ArgMax", "threshold": "searched threshold", "tta": f"TTA ({post['tta']})"}
    for name, m in rows.items():
        lines.append(f"| {names[name]} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"
