"""`medrun compare`'s default columns (the run-folder checks and the cascade tables are in tests/tasks/test_cascade.py)."""
import json

from medrun.compare import compare_runs


def finished_run(folder, experiment, mean):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("task: {name: classification}\n")
    (folder / "splits.json").write_text(json.dumps({"folds": [{"fold": 0, "test": ["a", "b"]}]}))
    (folder / "cv_summary.json").write_text(json.dumps({"experiment": experiment, "mean": mean,
                                                        "std": {k: 0.0 for k in mean}}))
    return folder


def test_two_class_runs_are_compared_on_the_positive_class_not_the_equal_macro_pair(tmp_path):
    binary = {"auc_macro": 0.7, "sensitivity_macro": 0.6, "specificity_macro": 0.6, "sensitivity_positive": 0.3,
              "specificity_positive": 0.9}
    runs = [finished_run(tmp_path / n, n, binary) for n in ("a", "b")]
    out, _ = compare_runs(runs, tmp_path / "out")
    header = (out / "compare.md").read_text().splitlines()[2]
    assert header == "| run | auc_macro | sensitivity_positive | specificity_positive |"
    three = {"auc_macro": 0.7, "sensitivity_macro": 0.6, "specificity_macro": 0.5}  # more classes: the macro pair
    runs = [finished_run(tmp_path / n, n, three) for n in ("c", "d")]
    out, _ = compare_runs(runs, tmp_path / "out")
    assert (out / "compare.md").read_text().splitlines()[2] == "| run | auc_macro | sensitivity_macro | specificity_macro |"
