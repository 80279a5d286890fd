"""The report: its figure (the whole title on the page, a quick run labelled, error bars inside [0, 1]), shared
caveats said once, and gains compared fold by fold where two runs share their test parts (unpaired where every
training shares one)."""
import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.text import Text
from scipy import stats

from medrun.reproduce.command import plan, score
from medrun.reproduce.report import figure, relative_gains, write_report
from medrun.reproduce.tables import load_table


def _job(row: str, ours: float, ours_std: float, paper: float) -> dict:
    return {"row": row, "protocol": "official_split",
            "metrics": {"acc": {"ours": ours, "ours_std": ours_std, "paper": paper, "paper_std": None}}}


def test_the_figure_keeps_the_whole_title_on_the_page_labels_a_quick_run_and_clips_its_error_bars():
    title = load_table("medmnist_v2_table_3").title
    jobs = [_job("ResNet-18 (28), RetinaMNIST", 0.95, 0.1, 0.524), _job("ResNet-50 (28), BreastMNIST", 0.03, 0.05, 0.8)]
    for quick in (False, True):
        fig = figure(title, jobs, quick)
        renderer = FigureCanvasAgg(fig).get_renderer()
        texts = [t for t in fig.findobj(Text) if "MedMNIST v2" in t.get_text()]
        assert len(texts) == 1
        shown = " ".join(texts[0].get_text().split())
        assert shown == ("QUICK RUN, not comparable with the paper: " if quick else "") + title
        assert texts[0].get_color() == ("tab:red" if quick else "black")
        box = texts[0].get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (box, fig.bbox)
        bars = [seg for c in fig.axes[0].collections if isinstance(c, LineCollection) for seg in c.get_segments()]
        xs = [x for seg in bars for x, _ in seg]
        assert min(xs) == 0.0 and max(xs) == 1.0  # 0.95 ± 0.1 ends at 1, 0.03 ± 0.05 at 0


def test_a_caveat_that_several_rows_share_is_said_once_naming_them_all(tmp_path):
    table = load_table("medmnist_v2_table_3")
    jobs = plan(table, {}, False, ["official_split"], tmp_path)  # no data given: every row not run, still reported
    write_report(tmp_path, table, jobs, {"quick": False, "protocols": ["official_split"]})
    md = (tmp_path / "report.md").read_text()
    subset = [line for line in md.splitlines() if "3,882 of the 4,708" in line]
    pneumonia = [r.name for r in table.rows if r.dataset == "PneumoniaMNIST"]
    assert len(pneumonia) == 7 and subset == [f"- **{'; '.join(pneumonia)}**: {table.row(pneumonia[0]).caveats[-1]}"]


def _isbi_run(folder, jaccards, tests):
    """A finished run's records: per-fold Jaccard under every definition the table reads, and its test parts."""
    folder.mkdir(parents=True)
    keys = ("jaccard_pooled_channels", "jaccard", "jaccard_with_background", "dice_pooled_channels", "dice",
            "dice_with_background")
    folds = [{"fold": k, "metrics": dict.fromkeys(keys, j)} for k, j in enumerate(jaccards)]
    mean = sum(jaccards) / len(jaccards)
    (folder / "cv_summary.json").write_text(json.dumps({"folds": folds, "mean": dict.fromkeys(keys, mean),
                                                        "std": dict.fromkeys(keys, 0.01)}))
    (folder / "splits.json").write_text(json.dumps({"folds": [{"fold": k, "test": t} for k, t in enumerate(tests)]}))
    return folder


def test_a_gain_measured_on_the_same_test_parts_gets_its_paired_comparison(tmp_path):
    table = load_table("sharp_unet_table_3_1")
    base, improved = [0.849, 0.839, 0.879, 0.865, 0.884], [0.869, 0.876, 0.895, 0.888, 0.896]
    parts = [[str(i) for i in range(6 * k, 6 * k + 6)] for k in range(5)]
    shuffled = [list(reversed(p)) for p in parts]  # the same images listed in another order pair up as well
    runs = {"U-Net, ISBI-2012 EM": _isbi_run(tmp_path / "unet", base, parts),
            "Sharp U-Net, ISBI-2012 EM": _isbi_run(tmp_path / "sharp", improved, shuffled)}
    jobs = plan(table, {}, False, ["leak_free"], tmp_path)  # no data given: every row not run, but these two
    for j in jobs:
        if j["row"] in runs:
            j.update(status="ok", run_dir=str(runs[j["row"]]))
    score(jobs, table)
    gain = next(g for g in relative_gains(table, jobs) if g["base"] == "U-Net, ISBI-2012 EM")
    diffs = np.subtract(improved, base)
    t = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(5))  # the paired t statistic by its textbook formula, df 4
    paired = gain["paired"]["leak_free"]
    assert (paired["n"], paired["better"]) == (5, 5) and paired["mean_difference"] == pytest.approx(diffs.mean())
    assert paired["paired_t_p"] == pytest.approx(2 * stats.t.sf(t, 4), rel=1e-9)
    write_report(tmp_path, table, jobs, {"quick": False, "protocols": ["leak_free"]})
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "ISBI-2012 EM over U-Net" in x)
    assert f"(leak_free; higher in 5 of 5 folds, paired t p {paired['paired_t_p']:.3g})" in line
    # tested on other images: no pairing, only the two means' gain
    _isbi_run(tmp_path / "other", improved, parts[1:] + parts[:1])
    next(j for j in jobs if j["row"].startswith("Sharp U-Net, ISBI"))["run_dir"] = str(tmp_path / "other")
    score(jobs, table)
    gain = next(g for g in relative_gains(table, jobs) if g["base"] == "U-Net, ISBI-2012 EM")
    assert gain["paired"] == {"leak_free": None} and gain["ours"]["leak_free"] == pytest.approx(
        np.mean(improved) / np.mean(base) - 1)


def test_trainings_that_share_one_test_part_are_compared_unpaired(tmp_path):
    """Five trainings each on one split (paper_code): the k-th trainings of two networks share nothing but the test
    part, which all ten share, so the gain gets Welch's test over the two groups and a count over all 25 pairs."""
    table = load_table("sharp_unet_table_3_1")
    base, improved = [0.871, 0.8675, 0.8673, 0.870, 0.8778], [0.892, 0.8927, 0.8690, 0.8954, 0.8931]
    split = [[str(i) for i in range(6)]] * 5
    runs = {"U-Net, ISBI-2012 EM": _isbi_run(tmp_path / "unet", base, split),
            "Sharp U-Net, ISBI-2012 EM": _isbi_run(tmp_path / "sharp", improved, split)}
    jobs = plan(table, {}, False, ["paper_code"], tmp_path)
    for j in jobs:
        if j["row"] in runs:
            j.update(status="ok", run_dir=str(runs[j["row"]]))
    score(jobs, table)
    compared = next(g for g in relative_gains(table, jobs) if g["base"] == "U-Net, ISBI-2012 EM")["paired"]["paper_code"]
    # 0.8690 lies below 3 of U-Net's 5 trainings; every other Sharp U-Net training above all 5
    assert (compared["pairs"], compared["better"]) == (25, 22) and "paired_t_p" not in compared
    m1, m2, v1, v2 = np.mean(improved), np.mean(base), np.var(improved, ddof=1) / 5, np.var(base, ddof=1) / 5
    t, df = (m1 - m2) / np.sqrt(v1 + v2), (v1 + v2) ** 2 / (v1 ** 2 / 4 + v2 ** 2 / 4)  # Welch by its formula
    assert compared["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    write_report(tmp_path, table, jobs, {"quick": False, "protocols": ["paper_code"]})
    line = next(x for x in (tmp_path / "report.md").read_text().splitlines() if "ISBI-2012 EM over U-Net" in x)
    assert f"(paper_code; one test part: higher in 22 of 25 pairs of trainings, Welch t p {compared['welch_p']:.3g})" \
        in line
