"""Trackers beside csv and wandb: TensorBoard and MLflow through Lightning's loggers, several at once, private,
and continued by a resume."""
import csv
import json

import pytest

import medrun
from medrun.errors import MedrunError
from medrun.tasks.segmentation import SegmentationTask
from tests.conftest import TINY


def test_several_loggers_at_once_and_a_resume_continues_the_same_tracker_runs(tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [*TINY, "trainer.max_epochs=2", "cv=holdout", "callbacks.early_stopping.enabled=false",
                 "logger=[csv,tensorboard,mlflow]", f"data.root={tmp_path / 'site_secret'}",
                 f"paths.output_dir={tmp_path / 'out'}"]
    step = SegmentationTask.training_step

    def dies_in_epoch_two(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationTask, "training_step", dies_in_epoch_two)
    with pytest.raises(RuntimeError, match="killed"):
        medrun.train(medrun.compose("train", overrides))
    monkeypatch.undo()
    run_dir = next((tmp_path / "out" / "custom").iterdir())
    fold = run_dir / "fold_0"
    first_id = json.loads((fold / "trackers.json").read_text())["mlflow"]
    medrun.api.resume(run_dir)
    assert json.loads((fold / "trackers.json").read_text())["mlflow"] == first_id

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("custom").experiment_id])
    assert [r.info.run_id for r in runs] == [first_id]  # the resume logged into the same run, not a new one
    run = runs[0]
    assert run.info.run_name == f"{run_dir.name}/fold_0" and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(first_id, "val/loss")]
    assert len(steps) == 2 and steps[0] < steps[1]  # epoch 1, then the resumed epoch 2, in the same run
    recorded = json.dumps({**run.data.params, **run.data.tags})
    assert str(tmp_path) not in recorded and run.data.tags["mlflow.user"] == ""  # paths cut, no user name
    assert run.data.params["data/root"] == ".../site_secret"

    events = EventAccumulator(str(fold / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/loss")] == steps  # both epochs in the fold's one TensorBoard folder
    epochs = {r["epoch"] for r in csv.DictReader(open(fold / "logs" / "metrics.csv")) if r.get("val/loss")}
    assert epochs == {"0", "1"}


def test_unknown_logger_in_a_list_names_the_valid_ones():
    with pytest.raises(MedrunError, match="unknown logger 'mlfow'; valid: csv, mlflow, none, tensorboard, wandb"):
        medrun.compose("train", ["logger=[csv,mlfow]"])


def test_configs_saved_before_logger_lists_still_resolve():
    from omegaconf import OmegaConf

    from medrun.training import chosen_loggers

    assert chosen_loggers(OmegaConf.create({"logger": {"name": "wandb", "project": "p"}})) == {"wandb": {"project": "p"}}
    assert chosen_loggers(OmegaConf.create({"logger": {"name": "none"}})) == {}
    assert list(chosen_loggers(medrun.compose("train", ["logger=[tensorboard,csv]"]))) == ["tensorboard", "csv"]


def test_the_progress_bar_shows_a_loss_logged_per_step_and_epoch_once(monkeypatch):
    from pytorch_lightning.callbacks import RichProgressBar

    from medrun.training import FoldProgressBar

    logged = {"train/loss_step": 0.7, "train/loss_epoch": 0.71, "val/loss": 0.6}
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: dict(logged))
    assert FoldProgressBar("1/2").get_metrics(None, None) == {"fold": "1/2", "train/loss": 0.7, "val/loss": 0.6}


def test_lightnings_advice_to_log_more_often_and_its_csv_notice_on_resume_are_quiet(recwarn):
    import warnings

    from medrun.console import quiet_known_noise

    quiet_known_noise()  # medrun logs every epoch's mean training loss, so the advice does not apply
    warnings.warn("The number of training batches (2) is smaller than the logging interval Trainer("
                  "log_every_n_steps=5). Set a lower value for log_every_n_steps if you want to see logs.", UserWarning)
    # a resumed fold keeps its rows (ResumableCSVLogger, checked in the resume test above), so the notice is false
    warnings.warn("Experiment logs directory /r/fold_0/logs/ exists and is not empty. Previous log files in this "
                  "directory will be deleted when the new ones are saved!", UserWarning)
    warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in recwarn] == ["another warning"]


def test_lightnings_notices_about_its_cloud_logger_and_counting_steps_are_dropped(caplog):
    import logging

    from medrun.console import quiet_known_noise

    quiet_known_noise()
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="pytorch_lightning.utilities.rank_zero"):
        logger.info("Loading `train_dataloader` to estimate number of stepping batches.")
        logger.info("Tip: try litlogger for free")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_the_tested_weights_are_the_best_or_the_last_epochs(tiny):
    """callbacks.checkpoint.test: best (by the monitored metric) scores the held-out part with best.ckpt; last with
    the final epoch's weights, as a paper that trains fixed epoch counts does."""
    import json

    import torch

    import medrun
    from medrun.runs import load_checkpoint

    for choice in ("best", "last"):
        run_dir, _ = medrun.train(medrun.compose("train", [*tiny, "cv=holdout", "trainer.max_epochs=2",
                                                           f"callbacks.checkpoint.test={choice}"]))
        metrics = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
        assert metrics["checkpoint"].endswith(f"checkpoints/{choice}.ckpt")
    last = load_checkpoint(run_dir / "fold_0" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and all(torch.is_tensor(v) for v in last["state_dict"].values())
