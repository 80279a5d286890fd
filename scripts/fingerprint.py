"""Fingerprint of a deterministic tiny run: hashes of cv_summary.json, predictions and eval rows.

Refactors that must not change behaviour are checked by running this before and after and comparing:

    python scripts/fingerprint.py --out /tmp/before.json      # on the old commit
    python scripts/fingerprint.py --out /tmp/after.json --compare /tmp/before.json

Three runs (Sharp U-Net on synthetic images, a classifier on synthetic images, the cascade on real BUSI
images from ../shared/data) are trained, evaluated with TTA and threshold search, and predicted with; two
more (MelaNet's CycleGAN and classifier, the adversarial task, on real BreastMNIST) are trained.
Keys added by the new code are listed, not counted as differences; timings and paths are left out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDRUN_SHARED_DATA", REPO.parent / "shared" / "data"))
COMMON = ["logger=none", "callbacks.progress=none", "trainer.max_epochs=2", "trainer.deterministic=true", "seed=3"]
RUNS = {
    "segmentation": ["experiment=quickstart", "data.count=16", "data.image_size=[32,32]", "data.source_size=[32,32]",
                     "model.filters=[4,8,16,32,64]", "data.batch_size=4", "cv=kfold", "cv.folds=2"],
    "classification": ["experiment=quickstart_cls", "data.count=24", "data.image_size=[64,64]", "cv=kfold", "cv.folds=2",
                       "data.batch_size=8"],
    "cascade": ["experiment=cascade_busi", f"data.root={SHARED}/busi_siim", "cv.folds=2", "data.image_size=[64,64]",
                "model.classifier_size=[64,64]", "model.classifier.backbone=resnet18",
                "model.segmenter.encoder=resnet18", "+trainer.limit_train_batches=2", "data.batch_size=8",
                "task.tta=none", "task.triplet.tops=[0.5,0.7]", "task.triplet.areas=[0,2000]",
                "task.triplet.bottoms=[0.3]", "task.triplet.min_components=[0,100]"],
    # manual optimisation: the CycleGAN before MelaNet's classifier, and the adversarial task
    "melanet": ["experiment=melanet_breastmnist", f"data.root={SHARED}/medmnist", "data.image_size=[32,32]",
                "+trainer.limit_train_batches=3", "oversample.epochs=1", "oversample.size=[32,32]",
                "oversample.limit_batches=4", "oversample.generator.widths=[8,16,32,64,64]",
                "oversample.discriminator.width=8"],
    "adversarial": ["experiment=corizzo_adversarial_breastmnist", f"data.root={SHARED}/medmnist",
                    "data.image_size=[32,32]", "model.filters=[8,16,32,64,128]", "+trainer.limit_train_batches=4"],
}
TRAIN_ONLY = {"melanet", "adversarial"}
VOLATILE = {"seconds", "time", "elapsed", "duration", "started", "finished", "run_dir", "output_dir", "path",
            "created", "checkpoint", "best_model_path", "versions", "command"}


STAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def _clean(value):
    """JSON without timings and paths, floats rounded to 6 digits (the files print 6)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str) and ("/" in value and ("tmp" in value or "outputs" in value)):
        return "<path>"
    return STAMP.sub("<time>", value) if isinstance(value, str) else value


def _digest(path: Path) -> str:
    """Hash of a file; markdown with its paths and folder timestamps replaced (they name this run's folder)."""
    data = path.read_bytes()
    if path.suffix == ".md":
        data = STAMP.sub("<time>", re.sub(r"/tmp/\S+", "<path>", data.decode())).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(run_dir: Path, eval_dir: Path | None, pred_dir: Path | None) -> dict:
    out = {"cv_summary": _clean(json.loads((run_dir / "cv_summary.json").read_text())),
           **{f.name: _digest(f) for f in sorted(run_dir.glob("*.csv"))}}
    for fold in sorted(run_dir.glob("fold_*")):
        out[f"{fold.name}/metrics"] = _clean(json.loads((fold / "metrics.json").read_text()))
        for f in [*sorted(fold.glob("*.csv")), *sorted((fold / "predictions").glob("*"))]:
            out[f"{f.relative_to(fold.parent)}"] = _digest(f)
    for f in sorted(eval_dir.glob("*")) if eval_dir else []:
        if f.suffix == ".json":
            out[f"eval/{f.name}"] = _clean(json.loads(f.read_text()))
        elif f.suffix in (".csv", ".md"):
            out[f"eval/{f.name}"] = _digest(f)
    for f in sorted(pred_dir.glob("*")) if pred_dir else []:
        out[f"predict/{f.name}"] = _clean(json.loads(f.read_text())) if f.suffix == ".json" else _digest(f)
    return out


def run_all(work: Path) -> dict:
    import medrun

    result = {}
    for name, overrides in RUNS.items():
        cfg = medrun.compose("train", [*overrides, *COMMON, f"paths.output_dir={work / name}"])
        run_dir, _ = medrun.train(cfg)
        if name in TRAIN_ONLY:
            result[name] = fingerprint(run_dir, None, None)
            continue
        eval_dir, _ = medrun.api.evaluate(run_dir, tta="flips", threshold="search", min_areas=(0, 20))
        if name == "cascade":
            inputs = SHARED / "busi_siim" / "dicom-images-train"
        elif name == "classification":
            inputs = work / "segmentation" / "inputs"
        else:  # a few of the segmentation run's own mask PNGs: images any run reads
            inputs = work / name / "inputs"
            inputs.mkdir()
            for s in sorted((run_dir / "fold_0" / "predictions").glob("*.png"))[:4]:
                (inputs / s.name).write_bytes(s.read_bytes())
        pred_dir = work / name / "predicted"
        medrun.api.predict(run_dir, inputs, pred_dir)
        result[name] = fingerprint(run_dir, eval_dir, pred_dir)
    return result


def compare(before: dict, after: dict) -> list[str]:
    """Differences; keys only in `after` are new keys and reported separately by the caller."""
    diffs = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                if k not in b:
                    diffs.append(f"{where}/{k}: missing after")
                else:
                    walk(a[k], b[k], f"{where}/{k}")
        elif a != b:
            diffs.append(f"{where}: {a!r} -> {b!r}")

    walk(before, after, "")
    return diffs


def new_keys(before, after, where="") -> list[str]:
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return []
    return [f"{where}/{k}" for k in after if k not in before] + [
        n for k in after if k in before for n in new_keys(before[k], after[k], f"{where}/{k}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint: exit 1 when anything differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = run_all(Path(work))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare:
        before = json.loads(args.compare.read_text())
        diffs = compare(before, result)
        for k in new_keys(before, result):
            print(f"new key: {k}")
        for d in diffs:
            print(f"DIFFERS: {d}")
        print(f"{len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
