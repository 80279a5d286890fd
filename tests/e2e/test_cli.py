"""The `medrun` command: in real processes where the process matters (help, a closed pipe, CPU DDP), in-process
(`medrun.cli.main`) for errors, data check and multirun."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medrun.cli import main
from tests.conftest import TINY

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}


def medrun(*args, cwd):
    return subprocess.run([sys.executable, "-m", "medrun.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_help_and_a_closed_pipe_in_a_real_process(tmp_path):
    r = medrun("--help", cwd=tmp_path)
    assert r.returncode == 0 and "medrun train experiment=quickstart" in r.stdout
    commands = r.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()
    starts = {re.match(r"\s+(\S.*?\s{2,})?", line).end() for line in commands if re.search(r"\S\s{2,}\S|^\s{5}", line)}
    assert starts == {31}  # every command's description starts in one column
    piped = subprocess.run(f"{sys.executable} -m medrun.cli list | head -1", shell=True, cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("augment:") and piped.stderr == ""  # a closed pipe is not an error


def test_train_help_list_and_user_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "quickstart, quickstart_cls" in out
    assert "cv: holdout, holdout_70_10_20, holdout_test_as_val, kfold, repeated_holdout" in out
    assert main(["list", "experiments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "experiment:" and any(line.split() == ["wide_sharp_unet_cvc", "Sharp", "U-Net", "paper,",
                                                              "Figure", "3.5:", "Wide", "Sharp", "U-Net",
                                                              "(35-70-140-280-560)", "on", "CVC-ClinicDB."]
                                             for line in lines)
    # each experiment's dataset, data and weights (the tests' caches are empty)
    status = {lines[k - 1].split()[0]: line.strip() for k, line in enumerate(lines) if line.strip().startswith("data=")}
    assert status["quickstart"] == "data=synthetic: built in; weights: none"
    assert status["cascade_siim"] == ("data=siim_acr: give data.root; weights: missing: resnext50_32x4d.tv_in1k, "
                                      "resnet34.imagenet")
    assert main(["weights", "list"]) == 0
    assert ("smp vgg16.imagenet: not cached; needed by sharp_unet_vgg16_cvc, unet_vgg16_cvc"
            in capsys.readouterr().out.splitlines())
    assert main(["train", "experiment=nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medrun: error: unknown experiment 'nope'; valid:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["train", "experiment=sharp_unet_isbi", f"data.root={tmp_path}/missing"]) == 2
    err = capsys.readouterr().err
    assert "data.root=" in err and "does not exist" in err
    assert not (tmp_path / "outputs").exists()  # nothing written for a run that could not start


def test_data_check_on_real_files_and_a_bad_copy(shared_data, tmp_path, capsys):
    root = shared_data / "isbi2012"
    assert main(["data", "check", "data=isbi2012", f"data.root={root}"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["samples"] == 30 and report["image_sizes_hxw"] == {"512x512": 30} and report["channels"] == {"1": 30}
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    for i in range(3):
        (bad / "images" / f"{i}.png").symlink_to(root / "membrane/train/image" / f"{i}.png")
        (bad / "masks" / f"{i}.png").symlink_to(root / "membrane/train/label" / f"{i}.png")
    (bad / "images" / "1.png").unlink()
    (bad / "images" / "1.png").write_bytes((root / "membrane/train/image/1.png").read_bytes()[:300])
    assert main(["data", "check", "data=folders", f"data.root={bad}", "data.channels=1"]) == 2
    err = capsys.readouterr().err
    assert "1 bad sample(s)" in err and "images/1.png" in err


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["-m", "train", *TINY, "cv=holdout", "name=sweep", "seed=1,2"]) == 0
    runs = sorted((tmp_path / "outputs" / "sweep").iterdir())
    assert len(runs) == 2
    seeds = {json.loads((d / "splits.json").read_text())["seed"] for d in runs}
    assert seeds == {1, 2}
    assert all((d / "cv_summary.json").is_file() for d in runs)


@pytest.mark.slow
def test_a_failing_multirun_job_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["-m", "train", *TINY, "cv=holdout", "name=sweep", "cv.val_fraction=0.2,7,0.3"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 3 jobs failed" in err and "cv.val_fraction=7" in err
    assert len(list((tmp_path / "outputs" / "sweep").iterdir())) == 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_makes_one_run_folder(tmp_path):
    # The console script, as a user starts it: Lightning re-runs this command line in the second process.
    exe = Path(sys.executable).with_name("medrun")
    r = subprocess.run([str(exe), "train", *TINY, "data.batch_size=2", "cv.folds=2", "name=ddp", "trainer=ddp_cpu"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "medrun: data path: per-sample (albumentations)" in r.stderr  # the run says which data path it uses
    runs = list((tmp_path / "outputs" / "ddp").iterdir())
    assert len(runs) == 1
    # the result and the next step, once (rank 0), naming the run folder
    assert len(re.findall(rf"next: medrun eval run=\S*ddp/{runs[0].name}\s", r.stdout)) == 1
    summary = json.loads((runs[0] / "cv_summary.json").read_text())
    assert len(summary["folds"]) == 2
    assert "world_size" not in summary
    cfg = (runs[0] / "config.yaml").read_text()
    assert "devices: 2" in cfg and "strategy: ddp" in cfg


def test_multirun_refuses_subprocess_ddp(capsys):
    assert main(["-m", "train", "trainer=ddp_cpu", "seed=1,2"]) == 2
    assert "-m cannot be combined with trainer.strategy=ddp" in capsys.readouterr().err
