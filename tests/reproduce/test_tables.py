"""Every published number in configs/reproduce/*.yaml equals its cell in ../shared/papers (#23): a transcription
error cannot land, and no published row is left out."""
import csv
import re

import pytest

from medrun.reproduce import load_table, table_names
from medrun.reproduce.tables import published_cells
from tests.conftest import SHARED_DATA

PAPERS = SHARED_DATA.parent / "papers"


@pytest.fixture(scope="module")
def papers():
    if not PAPERS.is_dir():
        pytest.fail(f"{PAPERS} is missing: check out ../shared next to the repository")
    return PAPERS


def _number(cell: str, scale: float):
    return None if cell.strip() == "" else float(cell) * scale


@pytest.mark.parametrize("name", [t for t in table_names() if load_table(t).paper_csv])
def test_every_published_number_matches_the_transcribed_csv(papers, name):
    table = load_table(name)
    rows = list(csv.DictReader(open(papers / table.paper_csv, newline="")))
    used = set()
    checked = 0
    for row in table.rows:
        cells = published_cells(table, row)
        if not row.paper_row:
            assert all(m.paper is None and m.std is None for m in row.metrics), f"{row.name}: a value without a source row"
            continue
        assert {m.name for m in row.metrics} == set(cells), f"{row.name}: a metric without its CSV columns"
        for m in row.metrics:
            spec = cells[m.name]
            found = [i for i, r in enumerate(rows) if all(r[k] == str(v) for k, v in spec["match"].items())]
            assert len(found) == 1, f"{name}: {row.name} {m.name} matches {len(found)} rows of {table.paper_csv}"
            used.add(found[0])
            source = rows[found[0]]
            expected = _number(source[spec["value"]], spec["scale"])
            assert (m.paper is None) == (expected is None), f"{row.name} {m.name}: {m.paper} vs {expected}"
            assert (expected is None) == (m.name in row.not_published), f"{row.name} {m.name}: not_published"
            if expected is not None:
                assert m.paper == pytest.approx(expected, abs=1e-9), f"{name}: {row.name} {m.name}"
            if spec["std"]:
                assert m.std == pytest.approx(_number(source[spec["std"]], spec["scale"]), abs=1e-9), (row.name, m.name)
            else:
                assert m.std is None, f"{row.name} {m.name}: a spread the paper does not publish"
            if spec["n"]:
                assert m.n == int(source[spec["n"]]), (row.name, m.name)
            checked += 1
    assert used == set(range(len(rows))), f"{name}: rows of {table.paper_csv} left out: {sorted(set(range(len(rows))) - used)}"
    assert checked >= len(rows)


def test_quoted_gains_and_figure_spreads_match_the_papers_readme(papers):
    text = " ".join((papers / "README.md").read_text().split())
    quoted = dict(re.findall(r"([\d.]+) % \(([^)]+)\)", text.split("Relative Jaccard gains quoted:")[1].split("Figure 3.5")[0]))
    gains = {g["improved"]: g["paper"] for g in load_table("sharp_unet_table_3_1").relative_gains}
    names = {"CVC-ClinicDB": "CVC-ClinicDB", "ISBI-2012": "ISBI-2012 EM", "ISIC-2018": "ISIC-2018", "lungs": "Lung CT",
             "DSB 2018": "DSB-2018", "COVID-19 CT, multi-class": "COVID-19 CT"}
    assert {names[d] for d in quoted.values()} == {k.removeprefix("Sharp U-Net, ") for k in gains}
    for value, dataset in quoted.items():
        assert gains[f"Sharp U-Net, {names[dataset]}"] == pytest.approx(float(value) / 100)
    figure = load_table("sharp_unet_figure_3_5")
    gain = re.search(r"improves Wide U-Net's Jaccard by ([\d.]+) %", text).group(1)
    assert figure.relative_gains[0]["paper"] == pytest.approx(float(gain) / 100)
    sharp, wide = re.search(r"deviations ([\d.]+) \(Wide Sharp\) vs ([\d.]+) \(Wide\)", text).groups()
    spread = {r.name: r.metrics[0].std for r in figure.rows}
    assert spread == pytest.approx({"Wide Sharp U-Net": float(sharp) / 100, "Wide U-Net": float(wide) / 100})


def test_every_shipped_table_has_all_its_published_values(capsys):
    from medrun.cli import main

    assert main(["reproduce", "list"]) == 0
    counts = re.findall(r"paper values: (\d+) of (\d+)", capsys.readouterr().out)
    assert len(counts) == len(table_names()) and all(a == b and int(b) > 0 for a, b in counts)


def test_every_caveat_stands_on_its_own():
    """report.md lists each caveat once, naming the rows it holds for: one that points at another row ("same as the
    row above") says nothing there, so rows sharing caveats must carry them (YAML anchors)."""
    for name in table_names():
        for row in load_table(name).rows:
            assert not any(re.search(r"rows? (above|below)|same caveats", c, re.I) for c in row.caveats), (name, row.name)
    table = load_table("sharp_unet_table_3_1")
    assert table.row("Sharp U-Net, ISBI-2012 EM").caveats == table.row("U-Net, ISBI-2012 EM").caveats
