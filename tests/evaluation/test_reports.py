"""The mean ± std tables: one fold's value is shown as a value, not with a spread of 0."""

from rich.console import Console

from medrun.evaluation.reports import aggregate, markdown, rich_table, table_markdown, table_over_folds


def _render(table) -> str:
    console = Console(width=120, record=True)
    console.print(table)
    return console.export_text()


def test_one_fold_shows_its_value_and_several_folds_their_spread():
    one = aggregate("e", "holdout", [{"fold": 0, "metrics": {"dice": 0.8}}])
    assert "| metric | value | fold 0 |" in markdown(one) and "| dice | 0.8000 | 0.8000 |" in markdown(one)
    assert "±" not in _render(rich_table(one)) and "value" in _render(rich_table(one))
    two = aggregate("e", "kfold", [{"fold": 0, "metrics": {"dice": 0.8}}, {"fold": 1, "metrics": {"dice": 0.6}}])
    assert "| dice | 0.7000 ± 0.1414 | 0.8000 | 0.6000 |" in markdown(two)
    assert "0.7000 ± 0.1414" in _render(rich_table(two))


def test_postprocessing_table_counts_the_folds_of_each_cell():
    table = table_over_folds([{"ArgMax": {"dice": 0.5, "jaccard": 0.4}}, {"ArgMax": {"dice": 0.7}}])
    assert table["ArgMax"]["dice"]["n"] == 2 and table["ArgMax"]["jaccard"]["n"] == 1
    text = table_markdown(table, "t", "n")
    assert "| ArgMax | 0.6000 ± 0.1414 | 0.4000 |" in text


def test_a_metric_some_folds_leave_undefined_says_over_how_many_folds_its_mean_is():
    folds = [{"fold": k, "metrics": {"accuracy": 0.5, **({"auc_macro": 0.6 + 0.2 * k} if k < 2 else {})}}
             for k in range(3)]
    summary = aggregate("e", "kfold", folds)
    assert summary["defined_in"] == {"auc_macro": 2} and summary["mean"]["auc_macro"] == 0.7
    text = markdown(summary)
    assert "| auc_macro | 0.7000 ± 0.1414 (2 of 3 folds) | 0.6000 | 0.8000 | - |" in text
    assert "| accuracy | 0.5000 ± 0.0000 | " in text and "`-`: undefined in that fold" in text
    assert "0.7000 ± 0.1414 (2 of 3 folds)" in _render(rich_table(summary))
    assert "undefined" not in markdown(aggregate("e", "kfold", folds[:2]))


def test_the_terminal_table_says_when_a_trivial_predictor_does_as_well():
    folds = [{"fold": k, "metrics": {"dice": 0.8, "precision": 0.7}} for k in range(2)]
    summary = aggregate("e", "kfold", folds)
    summary["trivial"] = {"all-foreground": {"mean": {"dice": 0.8, "precision": 0.9}, "std": {"dice": 0, "precision": 0}}}
    text = _render(rich_table(summary))
    assert "not better than a trivial predictor on dice (all-foreground 0.8000)" in " ".join(text.split())
    assert "precision (" not in text  # a trivial row winning precision alone says nothing
    summary["trivial"]["all-foreground"]["mean"]["dice"] = 0.5
    assert "trivial" not in _render(rich_table(summary))


def test_markdown_cells_escape_names_from_data():
    from markdown import markdown

    from medrun.evaluation.reports import md

    name = "<b>a|b</b> & c\nd"
    row = f"| {md(name)} | 1 |"
    assert row.count("|") - row.count("\\|") == 3  # two cells
    html = markdown(f"| x | y |\n|---|---|\n{row}\n", extensions=["tables"])
    assert "<td>&lt;b&gt;a|b&lt;/b&gt; &amp; c d</td>" in html
