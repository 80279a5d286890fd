"""Resume after kill -9, failure handling, safe checkpoints."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from medrun.runs import load_checkpoint
from tests.conftest import TINY

RESUMABLE = [*TINY, "data.count=48", "cv.folds=3", "trainer.max_epochs=6", "trainer.deterministic=true",
             "callbacks.early_stopping.enabled=false", "name=resume"]


@pytest.mark.slow
def test_kill_9_in_fold_2_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "medrun.cli", "train", *RESUMABLE],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    run_dir = None
    while time.time() < deadline:
        runs = list((tmp_path / "outputs" / "resume").glob("*")) if (tmp_path / "outputs" / "resume").is_dir() else []
        if runs and (runs[0] / "fold_1" / "checkpoints" / "last.ckpt").is_file():
            run_dir = runs[0]
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_dir is not None
    assert (run_dir / "fold_0" / "metrics.json").is_file()
    assert not (run_dir / "fold_1" / "metrics.json").is_file()  # killed in the middle of fold 2
    assert not (run_dir / "cv_summary.json").exists()
    fold0 = (run_dir / "fold_0" / "metrics.json").read_bytes()

    assert main(["resume", str(run_dir)]) == 0
    assert (run_dir / "fold_0" / "metrics.json").read_bytes() == fold0  # finished folds are kept as they are
    resumed = json.loads((run_dir / "cv_summary.json").read_text())

    _, uninterrupted = medrun.train(medrun.compose("train", [*RESUMABLE, f"paths.output_dir={tmp_path / 'ref'}"]))
    assert resumed == uninterrupted


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert main(["train", f"resume={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medrun: error:") and "is not a medrun run folder" in err and "\n" not in err


def test_non_finite_loss_stops_the_fold_and_is_recorded(tiny, capsys):
    code = main(["train", *tiny, "cv=holdout", "task.optimizer.name=sgd", "task.optimizer.lr=1e30",
                 "trainer.max_epochs=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "fold 0 failed: non-finite training loss" in err and "at epoch" in err and "step" in err
    run_dir = next(p for p in (tiny_path(tiny) / "custom").iterdir())
    assert json.loads((run_dir / "failed.json").read_text())["fold"] == 0
    assert not (run_dir / "cv_summary.json").exists() and not (run_dir / "summary.md").exists()


def tiny_path(tiny):
    from pathlib import Path

    return Path(next(o for o in tiny if o.startswith("paths.output_dir=")).split("=", 1)[1])


def test_out_of_memory_and_worker_crash_say_what_to_change(tiny, monkeypatch):
    from medrun.tasks.segmentation import SegmentationTask

    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SegmentationTask, "training_step", oom)
    with pytest.raises(MedrunError, match=r"out of memory; lower data.batch_size"):
        medrun.train(medrun.compose("train", [*tiny, "cv=holdout"]))
    monkeypatch.undo()

    from medrun.data.store import TransformedSamples

    def die(self, k):
        os._exit(1)

    monkeypatch.setattr(TransformedSamples, "__getitem__", die)
    with pytest.raises(MedrunError, match=r"data loader worker crashed .*data.num_workers=0"):
        medrun.train(medrun.compose("train", [*tiny, "cv=holdout", "data.num_workers=1"]))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = None


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch):
    global PWNED
    PWNED = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "x": Payload()}, f)
    with pytest.raises(MedrunError, match="refusing to load .*evil.ckpt.*allow_unsafe_checkpoints=true"):
        load_checkpoint(path)
    assert not PWNED.exists()


def test_checkpoints_written_by_medrun_load_with_weights_only(tiny):
    run_dir, _ = medrun.train(medrun.compose("train", [*tiny, "cv=holdout"]))
    checkpoints = sorted((run_dir / "fold_0" / "checkpoints").glob("*.ckpt"))
    assert [c.name for c in checkpoints] == ["best.ckpt", "last.ckpt"]
    states = {c.name: torch.load(c, weights_only=True) for c in checkpoints}
    assert "RngState" in "".join(states["last.ckpt"]["callbacks"])  # what a resume restores
    assert states["best.ckpt"]["state_dict"].keys() == states["last.ckpt"]["state_dict"].keys()
