"""report.html: one self-contained page per run (refreshed by eval and explain), compare, reproduce and sweep;
opened in headless Chromium."""
import csv
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import medrun
from medrun.runs import read_json
from tests.conftest import TINY

CHROMIUM = "/usr/bin/chromium"


def facts(path: Path) -> dict:
    html = path.read_text()
    return {"images": html.count('src="data:image/png;base64,'),
            "external": re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)([^"]*)"', html),
            "sections": re.findall(r"<h2>(.*?)</h2>", html), "html": html}


@pytest.fixture(scope="module")
def seg_run(shared_data, module_tmp):
    """Sharp U-Net on real CVC-ClinicDB frames, two folds, csv logger (curves)."""
    return medrun.train(medrun.compose("train", [
        "experiment=sharp_unet_cvc", f"data.root={shared_data}/cvc_clinicdb_sample/CVC-ClinicDB",
        "data.image_size=[32,32]", "model.filters=[4,8,16,32,64]", "trainer.max_epochs=2", "cv.folds=2",
        "callbacks.progress=none", f"paths.output_dir={module_tmp}"]))[0]


def test_a_finished_run_has_a_self_contained_report(seg_run):
    page = facts(seg_run / "report.html")
    assert page["external"] == []  # no script, stylesheet or image from anywhere else
    assert "<script" not in page["html"]
    assert {"Cross-validation", "Training", "Segmentation"} <= set(page["sections"])
    # per-fold scores, training curves, the held-out montage and the Dice distribution
    assert page["images"] == 4 and 'alt="per-fold scores"' in page["html"]
    # the montage and the distribution come from each held-out image's Dice, written next to its prediction
    splits = read_json(seg_run / "splits.json")
    for fold in splits["folds"]:
        rows = list(csv.DictReader(open(seg_run / f"fold_{fold['fold']}" / "predictions" / "per_image.csv")))
        assert sorted(r["id"] for r in rows) == sorted(fold["test"])
        assert all(0 <= float(r["dice"]) <= 1 for r in rows)
    assert (seg_run / "report_montage.png").is_file()
    curves = list(csv.DictReader(open(seg_run / "fold_0" / "logs" / "metrics.csv")))
    assert any(k.startswith("lr-") for k in curves[0])  # the learning rate is logged for the curves
    # every epoch logs its mean training loss, although each has fewer steps than log_every_n_steps
    assert {int(r["epoch"]) for r in curves if r.get("train/loss_epoch")} == {0, 1}


def test_eval_refreshes_the_run_report(seg_run):
    before = facts(seg_run / "report.html")
    out_dir, _ = medrun.api.evaluate(seg_run, threshold="search")
    after = facts(seg_run / "report.html")
    assert f"Evaluation {out_dir.name}" in after["sections"] and f"Evaluation {out_dir.name}" not in before["sections"]
    assert after["external"] == []
    assert 'alt="held-out images"' in after["html"]  # the montage is reused: eval does not redraw it


def test_classification_report_has_curves_confusion_and_calibration(shared_data, tmp_path):
    run_dir, _ = medrun.train(medrun.compose("train", [
        "experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist", "data.image_size=[32,32]",
        "model=timm", "model.backbone=resnet18", "model.pretrained=null", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2", "callbacks.progress=none", f"paths.output_dir={tmp_path}"]))
    page = facts(run_dir / "report.html")
    assert "Classification" in page["sections"] and 'alt="out-of-fold curves"' in page["html"]
    assert page["external"] == []  # no <img src="None"> either
    assert 'alt="per-fold scores"' not in page["html"]  # one fold (MedMNIST's split): the table says it all


def test_compare_and_sweep_pages(tiny_run, tmp_path):
    from medrun.report import sweep_report

    a = tiny_run[0]  # the shared run; b: a wider network on the same folds
    b, _ = medrun.train(medrun.compose("train", [*TINY, "cv.folds=3", "name=b", "model.filters=[8,16,32,64,128]",
                                                 f"paths.output_dir={tmp_path}"]))
    out, result = medrun.api.compare([a, b], output_dir=tmp_path / "cmp")
    page = facts(out / "report.html")
    assert page["images"] == 1 and "Side by side" in page["sections"] and page["external"] == []
    for name in result["metrics"]:
        assert name in page["html"]
    # a sweep's page from its summary: history and each swept parameter against the objective
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    jobs = [{"job": k, "overrides": [f"task.optimizer.lr={lr}", f"model={m}"], "objective": obj, "status": "ok",
             "mean": {"jaccard": obj}, "std": {"jaccard": 0.0}}
            for k, (lr, m, obj) in enumerate([(0.1, "unet", 0.2), (0.01, "sharp_unet", 0.5), (0.001, "unet", 0.4)])]
    medrun.runs.write_json(sweep / "multirun_summary.json", {"optimize": "jaccard", "jobs": jobs, "failed": []})
    (sweep / "multirun_summary.md").write_text("# Sweep\n\n| job | jaccard |\n|---|---|\n| 1 | 0.5 |\n")
    page = facts(sweep_report(sweep))
    assert page["images"] == 2 and 'alt="optimisation history"' in page["html"]
    assert 'alt="each parameter against the objective"' in page["html"]


def test_a_failing_report_never_loses_the_results_and_html_report_false_skips_it(tiny, monkeypatch, caplog):
    import medrun.report

    drawn = []
    monkeypatch.setattr(medrun.report, "run_report", lambda *a: drawn.append(a) and None or 1 / 0)
    run_dir, summary = medrun.train(medrun.compose("train", [*tiny, "html_report=true"]))
    assert summary is not None and (run_dir / "cv_summary.json").is_file() and not (run_dir / "report.html").exists()
    assert "report.html not written (ZeroDivisionError" in caplog.text and len(drawn) == 1
    run_dir, summary = medrun.train(medrun.compose("train", [*tiny, "html_report=false"]))
    assert (run_dir / "summary.md").is_file() and (run_dir / "cv_summary.json").is_file()
    assert len(drawn) == 1  # the page was never drawn


@pytest.mark.slow
def test_report_in_a_real_browser(seg_run, tmp_path):
    if not Path(CHROMIUM).is_file():
        reason = os.environ.get("MEDRUN_NO_BROWSER")
        if reason:  # .ci/run sets it only when `apt-get install chromium` failed
            pytest.skip(f"no browser: {reason}")
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright
    from PIL import Image

    page_file = tmp_path / "report.html"
    shutil.copy(seg_run / "report.html", page_file)  # alone in a folder: nothing beside it to load
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
            page.screenshot(path=str(tmp_path / "shot.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [page_file.as_uri()]  # the page itself, nothing else
    assert len(images) == facts(page_file)["images"] >= 4 and all(done and width > 0 for done, width, _ in images), images
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert shot.shape[0] > 900 and shot.std() > 20  # a long page with content, not a blank one


HOSTILE = ["<script>document.title='pwned'", '<meta http-equiv="refresh" content="0;url=about:blank">',
           "<img src=x onerror=document.title='pwned'>|x"]


def table_widths(markdown_text: str) -> list[int]:
    """The number of cells of each markdown table line (`\\|` is a pipe inside a cell)."""
    return [len(re.split(r"(?<!\\)\|", line)) for line in markdown_text.splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_hostile_class_and_run_names_stay_inert_and_intact(shared_data, tmp_path):
    src = shared_data / "isbi2012/membrane/train/image"
    for c, name in enumerate(HOSTILE):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(6):
            (tmp_path / "data" / name / f"{k}.png").symlink_to(src / f"{6 * c + k}.png")
    run_dir, summary = medrun.train(medrun.compose("train", [
        "experiment=densenet121_folder", f"data.root={tmp_path / 'data'}", "data.image_size=[32,32]", "model=timm",
        "model.backbone=resnet18", "model.pretrained=null", "trainer.max_epochs=1", "cv=kfold", "cv.folds=2",
        "callbacks.progress=none", "logger=none", "name='<i>run|x'", f"paths.output_dir={tmp_path / 'out'}"]))
    assert {f"sensitivity_{n}" for n in HOSTILE} <= set(summary["mean"])
    text = (run_dir / "summary.md").read_text()
    for table in text.split("\n\n"):
        widths = table_widths(table)
        assert len(set(widths)) <= 1, table  # every row has its header's cells: no value under the wrong header
    assert "<script" not in text and "<meta" not in text and "&lt;script&gt;" in text
    html = (run_dir / "report.html").read_text()
    assert "<script" not in html and "<meta http-equiv=\"refresh\"" not in html and "<img src=x" not in html
    assert "<i>" not in html
    out, _ = medrun.api.explain(run_dir, n=6, compare=("gradcam",))
    names = sorted(p.name for p in out.iterdir())
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names), names  # class names made safe file names
    assert sum(n.startswith("montage_") for n in names) >= 1
    if not Path(CHROMIUM).is_file():
        reason = os.environ.get("MEDRUN_NO_BROWSER")
        if reason:
            pytest.skip(f"no browser: {reason}")
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does")
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "report.html"
    shutil.copy(run_dir / "report.html", page_file)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: dialogs.append(d.message) or d.dismiss())
            page.goto(page_file.as_uri())
            page.wait_for_timeout(1500)  # a refresh of 0 s would have navigated by now
            seen = {"url": page.url, "title": page.title(), "scripts": page.eval_on_selector_all("script", "e => e.length"),
                    "metas": page.eval_on_selector_all("meta[http-equiv=refresh]", "e => e.length"),
                    "text": page.inner_text("body"),
                    "rows": page.eval_on_selector_all(
                        "table", "ts => ts.map(t => [...t.rows].map(r => r.cells.length))")}
        finally:
            browser.close()
    assert seen["url"] == page_file.as_uri() and seen["title"] != "pwned" and not dialogs
    assert seen["scripts"] == 0 and seen["metas"] == 0
    assert all(f"sensitivity_{n}" in seen["text"] for n in HOSTILE)  # shown as text, whole
    assert seen["rows"] and all(len(set(widths)) == 1 for widths in seen["rows"]), seen["rows"]
