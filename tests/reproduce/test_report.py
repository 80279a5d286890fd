"""The report's figure: the table's whole title on the page, a quick run labelled, error bars inside [0, 1]."""
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.text import Text

from medrun.reproduce.command import plan
from medrun.reproduce.report import figure, write_report
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
