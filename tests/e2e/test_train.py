"""Training end to end through the Python API: the run-folder contract, frozen kernels, precision, determinism."""
import json

import pytest
import torch

import medrun
from medrun.models.sharp import SHARPEN_KERNEL
from medrun.runs import load_checkpoint


def test_run_folder_contract(tiny_run):
    run_dir, summary = tiny_run
    assert run_dir.parent.name == "contract"
    for name in ("config.yaml", "overrides.txt", "splits.json", "cv_summary.json", "summary.md"):
        assert (run_dir / name).is_file(), name
    assert "cv.folds=3" in (run_dir / "overrides.txt").read_text().split("\n")
    saved = json.loads((run_dir / "cv_summary.json").read_text())
    assert saved == summary
    assert set(saved) == {"experiment", "protocol", "folds", "mean", "std", "defined_in", "trivial", "validation"}
    # a metric some folds leave undefined (the precision of a fold whose model marks no pixel) counts its folds
    assert saved["defined_in"] == {m: n for m in saved["mean"]
                                   if (n := sum(m in f["metrics"] for f in saved["folds"])) < len(saved["folds"])}
    assert set(saved["trivial"]) == {"all-empty", "all-foreground"}  # reference rows, under their own key
    assert "## Reference rows: trivial predictors (not methods)" in (run_dir / "summary.md").read_text()
    assert [f["fold"] for f in saved["folds"]] == [0, 1, 2]
    splits = json.loads((run_dir / "splits.json").read_text())
    for f in splits["folds"]:
        fold_dir = run_dir / f"fold_{f['fold']}"
        best, last = (load_checkpoint(fold_dir / "checkpoints" / n) for n in ("best.ckpt", "last.ckpt"))
        # best.ckpt is weights only (what eval loads); last.ckpt carries what a resume needs
        assert "optimizer_states" not in best and best["state_dict"].keys() == last["state_dict"].keys()
        assert last["optimizer_states"] and last["loops"]
        metrics = json.loads((fold_dir / "metrics.json").read_text())
        assert metrics["metrics"] == saved["folds"][f["fold"]]["metrics"]
        # Predictions exist for exactly the held-out samples, by sample id.
        assert sorted(p.stem for p in (fold_dir / "predictions").glob("*.png")) == sorted(f["test"])
        assert sorted(p.stem for p in (fold_dir / "predictions").glob("*.npy")) == sorted(f["test"])
    values = [f["metrics"]["dice"] for f in saved["folds"]]
    assert saved["mean"]["dice"] == pytest.approx(sum(values) / 3)
    assert all(0.0 <= v <= 1.0 for f in saved["folds"] for v in f["metrics"].values())
    table = (run_dir / "summary.md").read_text()
    assert f"| dice | {saved['mean']['dice']:.4f} ± {saved['std']['dice']:.4f} |" in table


def test_checkpoints_load_safely_and_keep_the_kernel_frozen(tiny_run):
    run_dir, _ = tiny_run
    ckpt = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] > 0  # it did train
    sharp = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.skips.")}
    assert len(sharp) == 4
    for w in sharp.values():
        assert torch.equal(w, SHARPEN_KERNEL.expand(w.shape[0], 1, 3, 3))  # bit-identical after training
    assert isinstance(ckpt["hyper_parameters"]["config"], dict)


def test_a_second_run_gets_a_new_folder(tmp_path, tiny):
    cfg = medrun.compose("train", [*tiny, "cv=holdout"])
    first, _ = medrun.train(cfg)
    second, _ = medrun.train(cfg)
    assert first != second and first.parent == second.parent
    assert (first / "cv_summary.json").is_file() and (second / "cv_summary.json").is_file()


def test_deterministic_runs_give_identical_weights(tiny):
    cfg = medrun.compose("train", [*tiny, "cv=holdout", "trainer.deterministic=true", "trainer.max_epochs=2"])
    (a, sa), (b, sb) = medrun.train(cfg), medrun.train(cfg)
    wa = load_checkpoint(a / "fold_0" / "checkpoints" / "last.ckpt")["state_dict"]
    wb = load_checkpoint(b / "fold_0" / "checkpoints" / "last.ckpt")["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    initial = medrun.build_model(cfg).state_dict()  # training moved the weights: equality is not trivial
    assert any(not torch.equal(wa[k], initial[k]) for k in initial if k.startswith("net.") and "skips" not in k)
    assert sa["mean"] == sb["mean"]


def test_bf16_mixed_on_cpu(tiny, monkeypatch):
    from medrun.models.sharp_unet import SharpUNet

    seen = []
    forward = SharpUNet.forward

    def recording(self, x):
        out = forward(self, x)
        if self.training:
            seen.append(out.dtype)
        return out

    monkeypatch.setattr(SharpUNet, "forward", recording)
    run_dir, summary = medrun.train(medrun.compose("train", [*tiny, "cv=holdout", "trainer.precision=bf16-mixed"]))
    assert seen and set(seen) == {torch.bfloat16}  # the training forward ran under bf16 autocast
    ckpt = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "best.ckpt")
    assert all(v.dtype == torch.float32 for k, v in ckpt["state_dict"].items() if k.startswith("net."))  # fp32 master weights
    assert all(0.0 <= v <= 1.0 for v in summary["folds"][0]["metrics"].values())


def test_paper_protocol_is_labelled_as_leaky(tiny):
    run_dir, summary = medrun.train(medrun.compose("train", [*tiny, "cv=repeated_holdout", "cv.repeats=2"]))
    assert summary["note"] == "test set used for model selection"
    assert "test set used for model selection" in (run_dir / "summary.md").read_text()


def test_wandb_offline_one_run_per_fold(tiny, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir, _ = medrun.train(medrun.compose("train", [*tiny, "cv.folds=2", "logger=wandb"]))
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one per fold, each finished before the next started
    import wandb

    assert wandb.run is None  # finish() was called
    # No code, git or host metadata is recorded.
    assert not list((run_dir / "wandb").rglob("wandb-metadata.json"))
    assert not [p for p in (run_dir / "wandb").rglob("code/*") if p.is_file()]
