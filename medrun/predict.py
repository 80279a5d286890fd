"""`medrun predict`: a finished run's fold ensemble on new images or DICOM files, preprocessed exactly as
in training (the run's own config) and post-processed as an eval of the run chose (see choose_postprocessing)."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from medrun.data.build import anonymous_id
from medrun.data.images import CLASSIFICATION_SUFFIXES, listed, read_image
from medrun.data.rle import encode
from medrun.errors import MedrunError
from medrun.evaluation.decision import Decision
from medrun.inference import load_run
from medrun.runs import read_json, require_run_dir, write_json


def choose_postprocessing(run_dir: Path, name: str | None) -> tuple[dict, str]:
    """(decision, what it is) for predict: `name` = an eval folder of the run, or none (the task's defaults);
    by default the newest eval of the run on its own data (an eval on another data root is used only when
    named, as is one from before medrun recorded where a decision came from)."""
    evals = sorted((run_dir / "eval").glob("*/postprocessing.json")) if (run_dir / "eval").is_dir() else []
    if name in ("none", "null"):
        return {}, "none: the task's defaults (postprocessing=none)"
    if name:
        path = run_dir / "eval" / Path(str(name)).name / "postprocessing.json"
        if not path.is_file():
            valid = ", ".join(p.parent.name for p in evals) or "none (run medrun eval first)"
            raise MedrunError(f"postprocessing={name}: no eval/{Path(str(name)).name}/postprocessing.json in "
                              f"{run_dir}; valid: {valid}, or none")
        return _decision(path)
    for path in reversed(evals):
        decision, what = _decision(path)
        if decision.get("provenance", {}).get("scored_on") == "the run's own data":
            return decision, what
    return {}, ("none: the task's defaults (no eval of this run on its own data"
                + (f"; name one of {', '.join(p.parent.name for p in evals)} with postprocessing=<folder>)"
                   if evals else ")"))


def _decision(path: Path) -> tuple[dict, str]:
    decision = read_json(path)
    origin = decision.get("provenance")
    if origin is None:
        return decision, f"eval/{path.parent.name} (its origin was not recorded)"
    searched = {"val": "searched on the validation parts", "out_of_fold": "searched on out-of-fold predictions",
                None: "not searched"}.get(origin.get("searched_on"), f"searched on {origin.get('searched_on')}")
    scored = origin["scored_on"]
    scored = scored if isinstance(scored, str) else " ".join(scored)
    return decision, f"eval/{origin['eval']} ({searched}; scored on {scored})"


def list_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedrunError(f"input={path} does not exist")
    # recursive: the SIIM-ACR test set nests each DICOM in <study>/<series>/ folders
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and p.suffix.lower() in CLASSIFICATION_SUFFIXES and listed(p, path))
    if not files:
        raise MedrunError(f"input={path} holds no images (png/jpg/jpeg/tif/tiff/bmp/dcm)")
    twice = sorted(s for s, n in Counter(p.stem for p in files).items() if n > 1)
    if twice:
        raise MedrunError(f"input={path}: several files are named {twice[0]!r} (outputs are named by file stem); "
                          "predict the folders one at a time")
    return files


FORMATS = ("png", "siim_rle")


def predict_files(run_dir, input_path, output, save_probabilities=False, tta=None, threshold=None,
                  device: str = "auto", allow_unsafe_checkpoints: bool = False, format: str = "png",
                  postprocessing: str | None = None) -> dict:
    """Write one output per readable input; returns the report (also saved as report.json).

    The TTA, threshold and minimum area come from `choose_postprocessing(run, postprocessing)`; `tta` and
    `threshold` given here take precedence. The report says which decision was used.

    Masks: `format=png` writes `<name>.png`; `format=siim_rle` also writes `submission.csv` (ImageId, EncodedPixels)
    in the SIIM-ACR run-length encoding, one row per image, `-1` for an empty mask.
    """
    if format not in FORMATS:
        raise MedrunError(f"format={format!r}; valid: {', '.join(FORMATS)}")
    if threshold is not None and not isinstance(threshold, (list, tuple)):
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise MedrunError(f"threshold={threshold!r} is not a number; pass e.g. threshold=0.5") from None
    run_dir = require_run_dir(run_dir)
    output = Path(str(output)).expanduser()
    if output.exists() and not output.is_dir():
        raise MedrunError(f"output={output} is a file: give a new folder for the predictions")
    if output.exists() and any(output.iterdir()):
        raise MedrunError(f"output={output} is not empty: choose a new folder (earlier outputs are never overwritten)")
    run = load_run(run_dir, device=device, allow_unsafe_checkpoints=allow_unsafe_checkpoints)
    cfg = run.config
    if format == "siim_rle" and not run.spatial:
        raise MedrunError("format=siim_rle writes segmentation masks; this run is a classifier (use format=png, "
                          "which writes predictions.csv)")
    chosen, chosen_from = choose_postprocessing(run_dir, postprocessing)
    decision = Decision.read(chosen, cfg)
    if tta:
        decision = decision.but(tta=tta)
    if threshold is not None:
        decision = decision.but(threshold=tuple(threshold) if isinstance(threshold, (list, tuple)) else threshold)
    files = list_inputs(Path(str(input_path)).expanduser())
    # a run trained with anonymised ids names its outputs by the same keyed hashes, never by the file names
    anonymous = bool(cfg.data.get("anonymize_ids"))
    name = (lambda p: anonymous_id(p.stem)) if anonymous else (lambda p: p.name)  # noqa: E731
    dicom = dict(cfg.data.get("dicom") or {})
    classes = [str(c) for c in cfg.data.classes]
    output.mkdir(parents=True, exist_ok=True)
    failed, rows, rle_rows = [], [], []
    for path in files:
        try:
            image = read_image(path, int(cfg.data.channels), dicom)
        except MedrunError as e:
            failed.append({"file": name(path), "error": str(e).replace(str(path), name(path)) if anonymous else str(e)})
            continue
        probs = run.predict(run.preprocess(image), decision.tta)[0].cpu()
        if run.spatial:
            stem = name(path) if anonymous else path.stem
            mask = _write_mask(output, stem, probs.numpy(), image.shape[:2], run.task, decision, save_probabilities)
            rle_rows.append((stem, encode(mask)))
        else:
            rows.append((name(path), probs.numpy()))
    multilabel = cfg.data.get("mode") == "multilabel"
    if not run.spatial and rows:
        probs = np.stack([p for _, p in rows])
        labels = decision.labels(probs, multilabel)
        with open(output / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id" if anonymous else "file", *(f"prob_{c}" for c in classes), "prediction"])
            for (name, p), lab in zip(rows, labels):
                pred = ";".join(c for c, on in zip(classes, lab) if on) if multilabel else classes[int(lab)]
                w.writerow([name, *(f"{v:.6f}" for v in p), pred])
    if format == "siim_rle" and run.spatial:
        # every input has a row: an unreadable one is written empty (-1), and said so in report.json and on stderr
        for item in failed:
            rle_rows.append((Path(item["file"]).stem, "-1"))
            item["submission"] = "-1 (unreadable: written as an empty mask)"
        with open(output / "submission.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "EncodedPixels"])
            w.writerows(sorted(rle_rows))
    stored = decision.stored()
    report = {"run": str(run_dir), "postprocessing": chosen_from, "tta": decision.tta, "threshold": stored["threshold"],
              **({"min_area_fraction": decision.min_area_fraction()} if run.spatial else
                 {"threshold_of": classes[decision.positive]} if stored["threshold"] is not None and not multilabel
                 else {}),
              "processed": len(files) - len(failed), "failed": failed}
    write_json(output / "report.json", report)
    return report


def _write_mask(output: Path, stem: str, probs: np.ndarray, size, task, decision: Decision,
                save_probabilities: bool) -> np.ndarray:
    """Probabilities back to the input's size, then the decision into a mask PNG (returned)."""
    h, w = size
    full = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in probs])
    mask, kept = task.mask_from_probabilities(full, decision)
    Image.fromarray(mask).save(output / f"{stem}.png")
    if save_probabilities:
        np.save(output / f"{stem}.npy", kept.astype(np.float16))
    return mask
