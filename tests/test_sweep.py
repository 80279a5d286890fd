"""Sweeps through Hydra's sweeper and launcher plugins (#16): Optuna, submitit and joblib, folds as jobs,
and the multirun summary."""
import json
from pathlib import Path

import pytest

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # Hydra multiruns and sweeps: several runs each


def sweep_summary(tmp_path) -> dict:
    return json.loads(next((tmp_path / "outputs" / "multirun").glob("*/multirun_summary.json")).read_text())


def test_optuna_sweep_reports_its_best_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["-m", "train", *TINY, "cv=holdout", "name=opt", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                 "task.optimizer.lr=tag(log,interval(1e-4,1e-2))", "optimize=dice"])
    assert code == 0, capsys.readouterr().err
    summary = sweep_summary(tmp_path)
    values = [r["objective"] for r in summary["jobs"]]
    assert len(values) == 3 and all(v is not None for v in values)
    assert values == sorted(values, reverse=True)  # best first: dice is maximised
    assert summary["optuna"]["best_value"] == pytest.approx(values[0])
    lr = float(next(o for o in summary["jobs"][0]["overrides"] if o.startswith("task.optimizer.lr=")).split("=")[1])
    assert summary["optuna"]["best_params"]["task.optimizer.lr"] == pytest.approx(lr)
    assert len({r["run_dir"] for r in summary["jobs"]}) == 3
    # the objective is each job's validation-part Dice, never its test part's
    for r in summary["jobs"]:
        saved = json.loads((Path(r["run_dir"]) / "cv_summary.json").read_text())
        assert r["objective"] == pytest.approx(saved["validation"]["mean"]["dice"])
    assert summary["optimize_on"] == "validation"
    assert "on the folds' **validation** parts" in next((tmp_path / "outputs" / "multirun").glob("*/multirun_summary.md")).read_text()
    page = (Path(summary["sweep_dir"]) / "report.html").read_text()  # with the optimisation history
    assert 'alt="optimisation history"' in page and 'alt="each parameter against the objective"' in page


def test_optimising_on_the_test_parts_is_a_named_choice_that_says_so(tmp_path, monkeypatch):
    from medrun.sweep import objective

    summary = {"mean": {"dice": 0.7}, "validation": {"mean": {"dice": 0.6}}}
    assert objective(summary, "dice", "validation") == 0.6 and objective(summary, "dice", "test") == 0.7
    with pytest.raises(medrun.errors.MedrunError, match="this task scores no validation part: optimize_on=test"):
        objective({"mean": {"auc": 0.5}}, "auc", "validation")
    monkeypatch.chdir(tmp_path)
    assert main(["-m", "train", *TINY, "cv=holdout", "name=ontest", "seed=1,2", "optimize=dice", "optimize_on=test"]) == 0
    summary = sweep_summary(tmp_path)
    for r in summary["jobs"]:
        saved = json.loads((Path(r["run_dir"]) / "cv_summary.json").read_text())
        assert r["objective"] == pytest.approx(saved["mean"]["dice"])
    md = next((tmp_path / "outputs" / "multirun").glob("*/multirun_summary.md")).read_text()
    assert "**test** parts: test set used for model selection" in md


@pytest.mark.parametrize("launcher", [["hydra/launcher=submitit_local"], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_launcher_plugins_run_each_job_in_its_own_folder(launcher, tmp_path):
    # no chdir: joblib's worker processes outlive the test and keep the folder they started in, which a
    # passing test's tmp_path removal would pull from under the next joblib sweep
    assert main(["-m", "train", *TINY, "cv=holdout", "name=launched", *launcher, "seed=1,2",
                 f"paths.output_dir={tmp_path / 'outputs'}"]) == 0
    summary = sweep_summary(tmp_path)
    runs = [r["run_dir"] for r in summary["jobs"]]
    assert len(set(runs)) == 2 and all(r["status"] == "ok" for r in summary["jobs"])
    seeds = {json.loads((tmp_path / "outputs" / "launched" / r.rsplit("/", 1)[1] / "splits.json").read_text())["seed"]
             for r in runs}
    assert seeds == {1, 2}


def test_folds_as_jobs_then_aggregate_equal_a_one_process_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [*TINY, "cv.folds=2", "trainer.deterministic=true", "trainer.max_epochs=2", "name=folds"]
    shared = tmp_path / "shared_run"
    assert main(["-m", "train", *common, "cv.fold=0,1", f"run_dir={shared}"]) == 0
    # the last job to finish wrote the summary; `medrun aggregate` writes the same again
    written = json.loads((shared / "cv_summary.json").read_text())
    (shared / "cv_summary.json").unlink()
    assert main(["aggregate", str(shared)]) == 0
    aggregated = json.loads((shared / "cv_summary.json").read_text())
    _, single = medrun.train(medrun.compose("train", [*common, f"paths.output_dir={tmp_path / 'single'}"]))
    assert aggregated == written == single
    with pytest.raises(MedrunError, match="holds a run of another configuration"):
        medrun.train(medrun.compose("train", [*common, "seed=3", "cv.fold=0", f"run_dir={shared}"]))
    # the same configuration spelt otherwise (overrides in another order, True for true) is the same run: fold 1
    # is re-joined (already finished, so nothing is retrained) instead of being refused
    (shared / "cv_summary.json").unlink()
    respelt = ["name=folds", *(o.replace("=true", "=True") for o in common if o != "name=folds")]
    again_dir, again = medrun.train(medrun.compose("train", [*respelt, "cv.fold=1", f"run_dir={shared}"]))
    assert again_dir == shared and again == written
    with pytest.raises(MedrunError, match="cv.fold=k trains one fold into a shared folder"):
        medrun.train(medrun.compose("train", [*common, "cv.fold=0"]))


def test_sweep_table_shows_the_runs_report_columns(tmp_path):
    from medrun.sweep import RECORD, summarize_sweep

    means = {"auc_macro": 0.8, "sensitivity_malignant": 0.6, "specificity_malignant": 0.9, "fn_malignant": 4.0,
             "balanced_accuracy": 0.75, "accuracy": 0.85}
    report = ["auc_macro", "sensitivity_malignant", "specificity_malignant", "fn_malignant", "balanced_accuracy"]
    for n, arm in enumerate(("none", "duplicate", "cyclegan")):
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / RECORD).write_text(json.dumps({
            "job": n, "overrides": [f"oversample={arm}"], "status": "ok", "report": report, "run_dir": f"r{n}",
            "mean": {k: v + n / 100 for k, v in means.items()}, "std": {k: 0.01 for k in means},
            "folds": 1 if arm == "none" else 3, "objective": means["auc_macro"] + n / 100}))
    summarize_sweep(tmp_path, "auc_macro")
    header = next(line for line in (tmp_path / "multirun_summary.md").read_text().splitlines() if line.startswith("| job"))
    assert header == "| job | overrides | status | " + " | ".join(report) + " | run folder |"
    lines = (tmp_path / "multirun_summary.md").read_text().splitlines()
    assert "| 0 | oversample=none | ok | 0.8000 | 0.6000 |" in "\n".join(lines)  # one fold: no spread shown
    assert "| 2 | oversample=cyclegan | ok | 0.8200 ± 0.0100 |" in "\n".join(lines)
    rows = json.loads((tmp_path / "multirun_summary.json").read_text())["jobs"]
    assert [r["overrides"][0] for r in rows] == ["oversample=cyclegan", "oversample=duplicate", "oversample=none"]
    # without report=, two-class runs show their positive class's sensitivity and specificity, not the macro pair
    # (equal for two classes), as compare does
    for n in range(3):
        record = json.loads((tmp_path / str(n) / RECORD).read_text())
        record["report"] = []
        extra = dict(sensitivity_macro=0.7, specificity_macro=0.7, sensitivity_positive=0.5, specificity_positive=0.9)
        record["mean"].update(extra)
        record["std"].update({k: 0.0 for k in extra})
        (tmp_path / str(n) / RECORD).write_text(json.dumps(record))
    summarize_sweep(tmp_path, "auc_macro")
    header = next(line for line in (tmp_path / "multirun_summary.md").read_text().splitlines() if line.startswith("| job"))
    assert "sensitivity_positive | specificity_positive" in header and "_macro |" not in header.replace("auc_macro", "")


def test_a_failed_optuna_trial_does_not_stop_the_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["-m", "train", *TINY, "cv=holdout", "name=failing", "hydra/sweeper=optuna",
                 "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=4",
                 "task.optimizer.lr=choice(0.001,-1)", "optimize=dice"])
    assert code == 1  # a job failed: reported, and the study finished
    summary = sweep_summary(tmp_path)
    assert len(summary["jobs"]) == 4  # every trial ran
    assert {r["status"] for r in summary["jobs"]} == {"failed", "ok"} and summary["failed"]
    failed = next(r for r in summary["jobs"] if r["status"] == "failed")
    assert failed["objective"] is None and "task.optimizer.lr=-1.0 must be a positive number" in failed["error"]
    assert "optuna" in summary


def test_an_optuna_grid_whose_last_trial_fails_ends_with_its_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["-m", "train", *TINY, "cv=holdout", "name=grid", "hydra/sweeper=optuna",
                 "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", "task.optimizer.lr=choice(0.001,-1)",
                 "optimize=dice"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err  # a failed job: the sweep says so in its summary, exit code 1
    summary = sweep_summary(tmp_path)
    assert sorted(r["status"] for r in summary["jobs"]) == ["failed", "ok"]
    assert summary["optuna"]["best_params"]["task.optimizer.lr"] == pytest.approx(0.001)


def test_a_sweep_sorts_a_lower_is_better_objective_from_its_lowest(tmp_path):
    from medrun.evaluation.reports import lower_is_better
    from medrun.sweep import RECORD, summarize_sweep

    assert lower_is_better("brier_positive") and lower_is_better("fn_total") and lower_is_better("val/loss")
    assert not lower_is_better("auc_macro")
    for n, brier in enumerate((0.2, 0.1, 0.3)):
        (tmp_path / str(n)).mkdir()
        (tmp_path / str(n) / RECORD).write_text(json.dumps({
            "job": n, "overrides": [f"seed={n}"], "status": "ok", "report": ["brier_positive"], "run_dir": f"r{n}",
            "mean": {"brier_positive": brier}, "std": {"brier_positive": 0.0}, "folds": 2, "objective": brier}))
    summarize_sweep(tmp_path, "brier_positive")
    assert [r["job"] for r in json.loads((tmp_path / "multirun_summary.json").read_text())["jobs"]] == [1, 0, 2]
