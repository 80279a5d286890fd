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


def test_runs_about_different_positive_classes_are_compared_on_one_named_class(tmp_path):
    def run(name, positive, sensitivity):
        mean = {"auc_macro": 0.7, "sensitivity_positive": sensitivity[positive], "sensitivity_malignant":
                sensitivity["malignant"], "sensitivity_benign": sensitivity["benign"]}
        folder = finished_run(tmp_path / name, name, mean)
        summary = json.loads((folder / "cv_summary.json").read_text())
        (folder / "cv_summary.json").write_text(json.dumps({**summary, "positive_class": positive}))
        return folder

    runs = [run("a", "malignant", {"malignant": 0.2, "benign": 0.9}),
            run("b", "benign", {"malignant": 0.3, "benign": 0.8})]
    out, _ = compare_runs(runs, tmp_path / "out")
    text = (out / "compare.md").read_text()
    assert "different positive classes (malignant, benign)" in text
    assert "| run | auc_macro | sensitivity_malignant |" in text
    assert "| a (a) | 0.7000 | 0.2000 |" in text and "| b (b) | 0.7000 | 0.3000 |" in text  # both about malignant
