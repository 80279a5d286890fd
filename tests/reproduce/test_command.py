"""`medrun reproduce` (#15): table files, the statistics on known inputs, rows that fail or lack data, collecting
existing runs, and the shipped Sharp U-Net table on real data in quick mode under both protocols."""
import importlib.util
import json
import math
import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict
from scipy import stats

import medrun
from medrun.cli import main
from medrun.config import CONFIG_DIR
from medrun.errors import MedrunError
from medrun.reproduce import load_table, table_names
from medrun.reproduce.statistics import compare_values
from tests.conftest import TINY


def test_statistics_on_known_inputs():
    c = compare_values(0.80, 0.02, 5, 0.77, 0.03, 5, {"absolute": 0.05})
    assert c["difference"] == pytest.approx(-0.03)
    assert c["within_spread"] is False and c["within_tolerance"] is True
    # Welch's t-test by its textbook formula: t over the unpooled standard error, Welch-Satterthwaite df
    va, vb = 0.03 ** 2 / 5, 0.02 ** 2 / 5
    t = (0.77 - 0.80) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    assert c["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert 0.05 < c["welch_p"] < 0.2
    assert compare_values(0.80, 0.02, 5, 0.79, 0.0, 3, {"relative": 0.02})["within_tolerance"] is True  # bar 0.016
    assert compare_values(0.80, 0.02, 5, 0.78, 0.0, 3, {"relative": 0.02})["within_tolerance"] is False
    assert compare_values(0.80, 0.02, 5, 0.81, 0.0, 3, {})["within_spread"] is True
    # nothing to compare never gives NaN: a missing paper value, one run, or no spread on either side
    missing = compare_values(None, None, None, 0.7, 0.01, 5, {"absolute": 0.02})
    assert missing["ours"] == 0.7 and all(missing[k] is None for k in ("difference", "within_spread", "welch_p"))
    assert compare_values(0.8, 0.02, 5, 0.7, 0.0, 1, {})["welch_p"] is None
    assert compare_values(0.8, 0.0, 5, 0.7, 0.0, 5, {})["welch_p"] is None
    # a paper printing np.std (ddof=0): the test takes it as the sample std sqrt(5/4) x larger
    population = compare_values(0.80, 0.02, 5, 0.77, 0.03, 5, {}, paper_std_form="population")
    vb = (0.02 * math.sqrt(5 / 4)) ** 2 / 5
    t = (0.77 - 0.80) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    assert population["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9) and population["welch_p"] > c["welch_p"]
    assert population["within_spread"] is False and load_table("sharp_unet_table_3_1").paper_std == "population"


def test_every_shipped_table_loads_and_names_real_experiments(capsys):
    assert {"sharp_unet_table_3_1", "sharp_unet_table_3_2", "melanet_table_2_1", "one_case_table_5_1",
            "athanasoula_table_2"} <= set(table_names())
    for name in table_names():
        table = load_table(name)
        assert table.rows and table.protocols
        for row in table.rows:
            if row.experiment is None:  # a published baseline shown for reference: it must carry its numbers
                assert row.paper_row and any(m.paper is not None for m in row.metrics), (name, row.name)
                continue
            assert (CONFIG_DIR / "experiment" / f"{row.experiment}.yaml").is_file(), (name, row.experiment)
            assert row.metrics and all(m.measure for m in row.metrics)
            # the row's own overrides compose with its experiment, under each protocol that applies to it
            for p in table.protocols.values():
                if not p["only"] or row.experiment in p["only"]:
                    medrun.compose("train", [f"experiment={row.experiment}", f"cv={p['cv']}", *p["overrides"],
                                             *row.overrides])
    # One Case: the thesis' leaking classifier protocol beside the leak-free one, for the cascade rows only
    one_case = load_table("one_case_table_5_1")
    assert one_case.published_with == "thesis" and one_case.protocols["thesis"]["leaks"]
    from medrun.reproduce.command import plan

    jobs = plan(one_case, {"data.busi_siim": "x"}, False, ["leak_free", "thesis"], Path("out"))
    assert sorted((j["row"], j["protocol"]) for j in jobs if "BUSI" in j["row"]) == [
        ("Cascade, BUSI stand-in", "leak_free"), ("Cascade, BUSI stand-in", "thesis"),
        ("U-Net ResNet34 baseline, BUSI stand-in", "leak_free")]
    # MelaNet's row carries the paper's Table 1 (AUC 81.18 %, one run) and runs under its code's leaking protocol
    melanet = load_table("melanet_table_2_1")
    auc = next(m for m in melanet.row("MelaNet (CycleGAN oversampling)").metrics if m.name == "auc_malignant")
    assert (auc.paper, auc.n, auc.std) == (0.8118, 1, None)
    assert {p["cv"] for p in melanet.protocols.values()} == {"holdout_test_as_val", "holdout"}
    # the Sharp U-Net tables run under the reference code's leaking protocol (the published numbers' source), the
    # text's repeated 5-fold CV, and the leak-free one
    sharp = load_table("sharp_unet_table_3_1")
    assert {k: p["cv"] for k, p in sharp.protocols.items()} == {
        "paper_code": "repeated_holdout", "paper_text": "repeated_kfold", "leak_free": "kfold"}
    assert sharp.published_with == "paper_code"
    assert main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    assert "data.isbi2012=<path>" in out and "one_case_table_5_1" in out and "paper values: 54 of 54" in out
    with pytest.raises(MedrunError, match="unknown table 'table_9'; valid: athanasoula_table_2"):
        load_table("table_9")


TABLE = {
    "Title": "test table", "Source": "tests",
    "protocols": {"paper": {"cv": "repeated_holdout", "leaks": True, "label": "test part drives early stopping",
                            "quick": ["cv.repeats=2"]},
                  "leak_free": {"cv": "kfold", "label": "grouped k-fold", "quick": ["cv.folds=2"]}},
    "inputs": {"data.missing": {"sets": ["data.root={path}"], "published": "nowhere.example"}},
    "Models": [
        {"Name": "tiny", "experiment": "quickstart", "overrides": TINY,
         "Results": {"Task": "Semantic Segmentation", "Dataset": "synthetic", "Metrics": {"dice": 0.5}},
         "Spread": {"dice": 0.1}, "N": {"dice": 5}, "tolerance": {"dice": {"absolute": 0.9}}, "caveats": ["made up"]},
        {"Name": "too small", "experiment": "quickstart", "overrides": [*TINY, "data.image_size=[8,8]"],
         "Results": {"Task": "Semantic Segmentation", "Dataset": "synthetic", "Metrics": {"dice": 0.5}}},
        {"Name": "no data", "experiment": "quickstart", "needs": ["data.missing"],
         "Results": {"Task": "Semantic Segmentation", "Dataset": "elsewhere", "Metrics": {"dice": None}}},
    ]}


def save_results():
    """scripts/save_results.py as a module (scripts/ is no package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "save_results.py"
    spec = importlib.util.spec_from_file_location("save_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report_of(capsys) -> dict:
    folder = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("report folder: ")
    return {"dir": Path(folder), **json.loads((Path(folder) / "report.json").read_text())}


def test_a_failing_row_and_a_missing_dataset_never_lose_the_other_rows(tmp_path, capsys):
    table = tmp_path / "test_table.yaml"
    OmegaConf.save(OmegaConf.create(TABLE), table)
    out = tmp_path / "outputs"
    code = main(["reproduce", str(table), "quick=true", f"paths.output_dir={out}", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2"])
    assert code == 1  # a row failed
    report = report_of(capsys)
    jobs = {(r["row"], r["protocol"]): r for r in report["rows"]}
    assert len(jobs) == 6
    for protocol in ("paper", "leak_free"):
        ok = jobs[("tiny", protocol)]
        assert ok["status"] == "ok", ok["status"]
        summary = json.loads((Path(ok["run_dir"]) / "cv_summary.json").read_text())
        dice = ok["metrics"]["dice"]
        assert dice["ours"] == pytest.approx(summary["mean"]["dice"]) and dice["ours_n"] == len(summary["folds"])
        assert dice["difference"] == pytest.approx(summary["mean"]["dice"] - 0.5)
        assert dice["within_tolerance"] is True and dice["paper_n"] == 5
        assert jobs[("too small", protocol)]["status"].startswith("failed: data.image_size=[8, 8] does not fit")
        assert jobs[("no data", protocol)]["status"] == "not run: needs data.missing=<path> (published: nowhere.example)"
    assert json.loads((Path(jobs[("tiny", "paper")]["run_dir"]) / "cv_summary.json").read_text())["note"]
    md = (report["dir"] / "report.md").read_text()
    assert "| tiny | synthetic | paper | dice | 0.5000 ± 0.1000 (5) |" in md and "failed: data.image_size" in md
    assert "test part drives early stopping" in md and "- **tiny**: made up" in md
    assert (report["dir"] / "report.png").stat().st_size > 5000
    page = (report["dir"] / "report.html").read_text()  # the table and paper-vs-ours figure in one page
    assert "<td>tiny</td>" in page and 'alt="paper vs measured (mean ± std)"' in page

    # runs=: the finished runs are collected instead of trained, with the same numbers; quick runs only by quick=true
    assert main(["reproduce", str(table), f"runs={out}", "quick=true", f"paths.output_dir={tmp_path / 'again'}"]) == 0
    again = {(r["row"], r["protocol"]): r for r in report_of(capsys)["rows"]}
    for protocol in ("paper", "leak_free"):
        assert again[("tiny", protocol)]["metrics"] == jobs[("tiny", protocol)]["metrics"]
        assert again[("too small", protocol)]["status"].startswith("not run: no finished run of quickstart_quick")
    # scripts/save_results.py keeps the measured runs' records (no checkpoint), from which the same report comes again
    config = Path(jobs[("tiny", "paper")]["run_dir"]) / "config.yaml"
    os.utime(config, (config.stat().st_mtime - 600,) * 2)  # a 10-minute run
    results = save_results().save(report["dir"], results=tmp_path / "results")
    records = results / "runs"
    assert not list(records.rglob("*.ckpt")) and not list(records.rglob("*.png")) and len(list(records.iterdir())) == 1
    links = re.findall(r"\]\(([^)]*)\)", (results / "report.md").read_text().split("## Run folders")[1])
    assert len(links) == 2 and all((results / link / "cv_summary.json").is_file() for link in links)
    provenance = (results / "provenance.md").read_text()
    assert "| too small | paper | failed | - | - |" in provenance and "| no data | paper | not run | - | - |" in provenance
    assert main(["reproduce", str(table), f"runs={records}", "quick=true", f"paths.output_dir={tmp_path / 'kept'}"]) == 0
    kept_report = report_of(capsys)
    kept = {(r["row"], r["protocol"]): r for r in kept_report["rows"]}
    for protocol in ("paper", "leak_free"):
        assert kept[("tiny", protocol)]["metrics"] == jobs[("tiny", protocol)]["metrics"]
        assert Path(kept[("tiny", protocol)]["run_dir"]).is_relative_to(records)
    for f in records.rglob("*"):  # as a fresh checkout leaves them: every file of the same time
        os.utime(f, (0, 0))
    save_results().save(kept_report["dir"], results=tmp_path / "results")
    assert "| tiny | paper | ok | 10.0 |" in (results / "provenance.md").read_text()  # the minutes kept beside the records
    assert main(["reproduce", str(table), f"runs={out}", f"paths.output_dir={tmp_path / 'full'}"]) == 0
    assert all(r["status"].startswith("not run") for r in report_of(capsys)["rows"])  # full never takes quick runs
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", str(table), f"runs={tmp_path / 'empty'}", f"paths.output_dir={tmp_path / 'none'}"]) == 0
    nothing = report_of(capsys)
    assert all(r["status"].startswith("not run") for r in nothing["rows"])
    assert (nothing["dir"] / "report.png").is_file() and "0 measured" in (nothing["dir"] / "report.md").read_text()
    with pytest.raises(MedrunError, match="data.isbi is not an input of table test_table; valid: data.missing"):
        main(["--debug", "reproduce", str(table), "data.isbi=x"])


def test_sharp_unet_table_quick_on_real_data_under_every_protocol(shared_data, tmp_path, capsys):
    out = tmp_path / "outputs"
    code = main(["reproduce", "sharp_unet_table_3_1", "quick=true", f"data.isbi2012={shared_data}/isbi2012",
                 f"data.covid_ct={shared_data}/covid19_ct_seg", f"paths.output_dir={out}"])
    assert code == 0
    report = report_of(capsys)
    rows = report["rows"]
    ran = [r for r in rows if r["status"] == "ok"]
    assert {(r["dataset"], r["protocol"]) for r in ran} == {(d, p) for d in ("ISBI-2012 EM", "COVID-19 CT (3 classes)")
                                                            for p in ("paper_code", "paper_text", "leak_free")}
    assert len(ran) == 12 and all(r["quick"] and 0 <= r["metrics"]["jaccard"]["ours"] <= 1 for r in ran)
    assert all(r["name"].endswith("_quick") for r in ran)  # quick runs never mix with full-size runs of a row
    waiting = [r for r in rows if r["status"] != "ok"]
    assert len(waiting) == 24 and all(r["status"].startswith("not run: needs data.") for r in waiting)
    table = load_table("sharp_unet_table_3_1")
    for r in ran:
        paper = {m.name: m.paper for m in table.row(r["row"]).metrics}
        for name in ("jaccard", "dice"):
            c = r["metrics"][name]
            summary = json.loads((Path(r["run_dir"]) / "cv_summary.json").read_text())
            stats = summary.get("over_repeats") or summary
            assert c["ours"] == pytest.approx(stats["mean"][f"{name}_pooled_channels"])  # the paper's definition
            assert c["definitions"]["medrun"] == pytest.approx(stats["mean"][name])      # medrun's beside it
            assert c["paper"] == paper[name] and c["difference"] == pytest.approx(c["ours"] - paper[name])
        assert r["metrics"]["jaccard"]["ours_n"] == 2  # quick: 2 repeats, 2 folds, 2 repeated trainings
    covid = [r for r in ran if r["dataset"].startswith("COVID")]
    assert any(abs(r["metrics"]["jaccard"]["ours"] - r["metrics"]["jaccard"]["definitions"]["medrun"]) > 1e-4
               for r in covid)  # three classes: the background counts in the paper's definition
    md = (report["dir"] / "report.md").read_text()
    assert "**Quick run**" in md and "not comparable" in md and "test set is used for model selection" in md
    assert "The published numbers came from protocol **paper_code**" in md and "n/t" not in md
    assert "## Where the gap comes from" in md and "Where the definitions differ on our runs" in md
    assert "| jaccard | Sharp U-Net, ISBI-2012 EM over U-Net, ISBI-2012 EM | +3.63 % | +3.63 % | - (quick run: noise) |" in md
    # a quick report draws no verdict, says what ran, and carries the runs' own notes
    measured_line = next(line for line in md.splitlines() if line.startswith("| U-Net, ISBI-2012 EM | ISBI-2012 EM | "))
    assert measured_line.split(" | ")[8:11] == ["-", "-", "-"]
    assert measured_line.split(" | ")[11].startswith(("all-empty ", "all-foreground "))  # beside every protocol
    assert "What ran:" in md and "(`cv=kfold`; ran with cv.folds=2)" in md
    assert "## Run notes" in md and "test set used for model selection" in md.split("## Run notes")[1]
    measured = {(r["row"], r["protocol"]): r["metrics"]["jaccard"] for r in ran}
    row = "Sharp U-Net, COVID-19 CT"
    source = next(g for g in report["gap_sources"] if g["row"] == row and g["metric"] == "jaccard")
    at_code, clean = measured[(row, "paper_code")], measured[(row, "leak_free")]
    assert source["definition_gap"] == pytest.approx(at_code["ours"] - at_code["definitions"]["medrun"])
    assert source["protocol_gap"] == pytest.approx(at_code["ours"] - clean["ours"])
    assert source["remaining_gap"] == pytest.approx(at_code["ours"] - 0.8739)
    gaps = {(g["row"], g["metric"], g["protocols"][0]): g["gap"] for g in report["protocol_gaps"]}
    assert gaps[(row, "jaccard", "paper_text")] == pytest.approx(measured[(row, "paper_text")]["ours"] - clean["ours"])


def test_collecting_runs_takes_the_last_finished_and_skips_unreadable_folders(tmp_path):
    import os

    from medrun.reproduce.command import collect, plan

    table_file = tmp_path / "t.yaml"
    OmegaConf.save(OmegaConf.create({**TABLE, "Models": TABLE["Models"][:1]}), table_file)
    table = load_table(str(table_file))

    def run(folder, name, finished, *extra):
        """A finished run as `medrun train` saves it: the resolved config of the row's settings (and `extra`)."""
        d = tmp_path / "runs" / folder
        d.mkdir(parents=True)
        cfg = medrun.compose("train", ["experiment=quickstart", "cv=kfold", *TINY, *extra,
                                       f"paths.output_dir={tmp_path}", "data.num_workers=2"])
        with open_dict(cfg):
            cfg.name = name
        OmegaConf.save(cfg, d / "config.yaml", resolve=True)
        (d / "cv_summary.json").write_text(json.dumps({"mean": {"dice": 0.5}, "std": {"dice": 0.0}, "folds": [{}]}))
        os.utime(d / "cv_summary.json", (finished, finished))
        return d

    newer = run("2020-01-01_00-00-00", "quickstart", 2_000_000_000)  # other paths and workers: still the row's
    run("my_old_run", "quickstart", 1_000_000_000)  # sorts after by name, finished earlier
    run("zz_quick", "quickstart_quick", 2_100_000_000)  # a quick run never stands in for a full one
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("name: [unclosed\n")
    (broken / "cv_summary.json").write_text("{}")
    jobs = plan(table, {}, False, ["leak_free"], tmp_path / "out")
    skipped = collect(jobs, table, [str(tmp_path / "runs")])
    assert jobs[0]["status"] == "ok" and jobs[0]["run_dir"] == str(newer) and jobs[0]["quick"] is False
    assert len(skipped) == 1 and skipped[0].startswith(str(broken))
    # the newest finished run of the same name and row keys trained otherwise: not comparable, and it says why
    short = run("short", "quickstart", 2_200_000_000, "task.optimizer.lr=0.1",
                "+trainer.limit_train_batches=2")
    jobs = plan(table, {}, False, ["leak_free"], tmp_path / "out")
    collect(jobs, table, [str(tmp_path / "runs")])
    status = jobs[0]["status"]
    assert status.startswith(f"not run: the finished run {short} is not comparable") and "run_dir" not in jobs[0]
    assert "task.optimizer.lr: run 0.1, row 0.001" in status and "trainer.limit_train_batches: run 2, row unset" in status
    assert "num_workers" not in status and "paths" not in status
    # a run saved before medrun had a setting that the row leaves off (here an empty list) is still the row's
    older = run("older", "quickstart", 2_300_000_000)
    saved = OmegaConf.load(older / "config.yaml")
    with open_dict(saved):
        del saved.data["augment_schedule"]
    OmegaConf.save(saved, older / "config.yaml")
    jobs = plan(table, {}, False, ["leak_free"], tmp_path / "out")
    collect(jobs, table, [str(tmp_path / "runs")])
    assert jobs[0]["status"] == "ok" and jobs[0]["run_dir"] == str(older)


def test_train_missing_resumes_the_interrupted_run_trains_the_absent_one_and_then_only_collects(tmp_path, capsys):
    from medrun.crossval import train
    from medrun.reproduce.command import plan

    table_file = tmp_path / "t.yaml"
    OmegaConf.save(OmegaConf.create({**TABLE, "Models": TABLE["Models"][:1]}), table_file)
    out = tmp_path / "outputs"
    # leak_free interrupted after its first fold: a run folder with config and splits, no cv_summary.json
    job = plan(load_table(str(table_file)), {}, True, ["leak_free"], out)[0]
    partial = out / "quickstart_quick" / "interrupted"
    assert train(medrun.compose("train", [*job["overrides"], f"run_dir={partial}", "cv.fold=0"]))[1] is None
    fold_0 = (partial / "fold_0" / "metrics.json").read_text()
    assert not (partial / "cv_summary.json").exists()
    collected = ["reproduce", str(table_file), "quick=true", f"runs={out}", f"paths.output_dir={tmp_path / 'c'}"]
    assert main(collected) == 0  # collecting alone trains nothing and names the run to resume
    status = {r["protocol"]: r["status"] for r in report_of(capsys)["rows"]}
    assert f"the interrupted run {partial} has its settings (train_missing=true resumes it)" in status["leak_free"]
    assert "interrupted" not in status["paper"] and not (partial / "cv_summary.json").exists()

    fill = ["reproduce", str(table_file), "quick=true", "train_missing=true", f"paths.output_dir={out}"]
    assert main(fill) == 0
    rows = {r["protocol"]: r for r in report_of(capsys)["rows"]}
    assert rows["leak_free"]["status"] == "ok" and rows["leak_free"]["run_dir"] == str(partial)
    assert (partial / "fold_0" / "metrics.json").read_text() == fold_0  # resumed: the finished fold is not retrained
    summary = json.loads((partial / "cv_summary.json").read_text())
    assert len(summary["folds"]) == 2 and rows["leak_free"]["metrics"]["dice"]["ours"] == summary["mean"]["dice"]
    trained = Path(rows["paper"]["run_dir"])
    assert rows["paper"]["status"] == "ok" and trained.parent == out / "quickstart_quick" and trained != partial
    # the interrupted run went first, though its row comes second
    assert (partial / "cv_summary.json").stat().st_mtime <= (trained / "config.yaml").stat().st_mtime
    # the same command again: every row has its run, so it trains nothing and reports the same numbers
    assert main(fill) == 0
    report = report_of(capsys)
    again = {r["protocol"]: r for r in report["rows"]}
    assert {p: (r["run_dir"], r["metrics"]) for p, r in again.items()} == {
        p: (r["run_dir"], r["metrics"]) for p, r in rows.items()}
    assert sorted(d.name for d in (out / "quickstart_quick").iterdir()) == sorted(["interrupted", trained.name])
    provenance = (save_results().save(report["dir"], results=tmp_path / "results") / "provenance.md").read_text()
    assert f"runs={out} train_missing=true` (quick)" in provenance  # the command that goes on where it stopped
    # a row whose data is absent keeps saying so
    missing = {**TABLE["Models"][0], "Name": "no data", "needs": ["data.missing"]}
    OmegaConf.save(OmegaConf.create({**TABLE, "Models": [missing]}), table_file)
    assert main([*fill[:-1], f"paths.output_dir={tmp_path / 'other'}", "data.missing=/nowhere", "protocols=paper"]) == 1
    assert report_of(capsys)["rows"][0]["status"] == "failed: data.missing=/nowhere does not exist"


def test_a_measure_counts_the_folds_that_define_it():
    from medrun.reproduce.command import measure

    summary = {"folds": [{}, {}, {}], "mean": {"auc_macro": 0.7, "accuracy": 0.5},
               "std": {"auc_macro": 0.1, "accuracy": 0}, "defined_in": {"auc_macro": 2},
               "table_5_1": {"ArgMax": {"dice": {"mean": 0.6, "std": 0.1, "n": 1}}}}
    assert measure(summary, "auc_macro") == (0.7, 0.1, 2) and measure(summary, "accuracy")[2] == 3
    assert measure(summary, "table_5_1/ArgMax/dice") == (0.6, 0.1, 1)


def test_weights_inputs_come_from_the_cache_or_name_the_fetch_command(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from medrun.reproduce.command import plan

    table = load_table("melanet_table_2_2_2_3")
    row = "Table 2.2, DenseNet-121 + BGT, real"
    jobs = [j for j in plan(table, {"data.covid_vs_normal": str(tmp_path)}, False, ["paper"], tmp_path) if j["row"] == row]
    assert jobs[0]["status"].startswith("not run: needs weights.imagenet=<path>")  # offline, nothing cached
    assert jobs[0]["status"].endswith("or `medrun weights fetch library=timm name=densenet121.tv_in1k`")
    # a cached copy serves the row: the table's cache overrides replace the file's
    folder = Path(constants.HF_HUB_CACHE) / "models--timm--densenet121.tv_in1k"
    monkeypatch.setattr("medrun.models.pretrained.Weights.cached_file",
                        lambda self: folder / "model.safetensors" if self.name == "densenet121.tv_in1k" else None)
    job = next(j for j in plan(table, {"data.covid_vs_normal": str(tmp_path)}, False, ["paper"], tmp_path) if j["row"] == row)
    assert job["status"] == "planned" and "model.pretrained=tv_in1k" in job["overrides"]
    assert not any(o.startswith("model.weights_path") for o in job["overrides"])
    given = next(j for j in plan(table, {"data.covid_vs_normal": str(tmp_path), "weights.imagenet": str(tmp_path)}, False,
                                 ["paper"], tmp_path) if j["row"] == row)  # a file wins
    assert f"model.weights_path={tmp_path}" in given["overrides"] and "model.pretrained=tv_in1k" not in given["overrides"]


def test_rows_whose_networks_start_from_imagenet_need_cached_weights_offline(tmp_path):
    from medrun.reproduce.command import plan

    table = load_table("melanet_table_2_2_2_3")
    jobs = {j["row"]: j for j in plan(table, {"data.covid_vs_normal": str(tmp_path)}, False, ["paper"], tmp_path)}
    vgg = jobs["Table 2.2, VGG-16, real"]
    assert vgg["status"] == ("not run: needs the torchvision weights vgg16 (downloads are off: `medrun weights fetch "
                             "library=torchvision name=vgg16` on a connected machine)")
    resnet = jobs["Table 2.2, ResNet-50, real"]
    assert "timm weights resnet50.tv_in1k" in resnet["status"]
    quick = plan(table, {"data.covid_vs_normal": str(tmp_path)}, True, ["paper"], tmp_path)
    assert all(j["status"] == "planned" for j in quick if j["row"] in (vgg["row"], resnet["row"]))  # random init
