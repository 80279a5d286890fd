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


def test_runs_on_the_same_images_get_a_paired_test_against_the_first(tmp_path):
    from scipy.stats import binomtest, wilcoxon

    ids = [f"img{k}" for k in range(12)]
    correct = {"a": [1] * 6 + [0] * 6, "b": [1] * 5 + [0] + [1] * 6, "c": [1] * 6 + [0] * 6}
    runs = []
    for name, values in correct.items():
        run = finished_run(tmp_path / name, name, {"balanced_accuracy": sum(values) / 12})
        (run / "splits.json").write_text(json.dumps({"folds": [{"fold": 0, "test": ids}]}))
        (run / "fold_0").mkdir()
        (run / "fold_0" / "predictions.csv").write_text(
            "id,true,prob_x,prob_y,pred,correct\n" + "".join(f"{i},0,0.5,0.5,0,{v}\n" for i, v in zip(ids, values)))
        runs.append(run)
    out, result = compare_runs(runs, tmp_path / "out")
    b = result["paired"]["b (b)"]  # b is right on 6 images a got wrong, a on 1 that b got wrong
    assert b["discordant"] == [1, 6] and b["p"] == binomtest(6, 7, 0.5).pvalue and b["difference"] == 5 / 12
    assert result["paired"]["c (c)"]["p"] == 1.0  # the same answers: nothing discordant
    text = (out / "compare.md").read_text()
    assert "## Paired tests against a (a)" in text and "not corrected for the several comparisons" in text
    assert f"| b (b) | exact McNemar, correct per image | 12 | +0.4167 | {b['p']:.4g} |" in text
    # segmentation: the Wilcoxon signed-rank test on the per-image Dice of the same images
    from medrun.evaluation.paired import paired_test

    first, other = dict(zip(ids, [0.1 * k for k in range(12)])), dict(zip(ids, [0.1 * k + 0.05 for k in range(12)]))
    assert paired_test("dice", first, other)["p"] == wilcoxon(list(first.values()), list(other.values())).pvalue
    # an image held out twice (repeated protocols) gives no independent pairs: no test
    (runs[1] / "splits.json").write_text(json.dumps({"folds": [{"fold": 0, "test": ids}, {"fold": 1, "test": ids}]}))
    (runs[1] / "fold_1").mkdir()
    (runs[1] / "fold_1" / "predictions.csv").write_text((runs[1] / "fold_0" / "predictions.csv").read_text())
    (runs[0] / "splits.json").write_text((runs[1] / "splits.json").read_text())
    (runs[2] / "splits.json").write_text((runs[1] / "splits.json").read_text())
    _, again = compare_runs(runs, tmp_path / "out")
    assert again["paired"] == {}
    # a run from a version whose predictions.csv had no correct column: no test, and no error
    for run in runs:
        (run / "splits.json").write_text(json.dumps({"folds": [{"fold": 0, "test": ids}]}))
    (runs[2] / "fold_0" / "predictions.csv").write_text("id,true,prob_x,prob_y,pred\n" + "".join(
        f"{i},0,0.5,0.5,0\n" for i in ids))
    _, old = compare_runs(runs, tmp_path / "out")
    assert old["paired"] == {} and "b (b)" in old["metrics"]
