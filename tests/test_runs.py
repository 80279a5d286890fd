"""medrun/runs.py: checkpoint loading says whether a file is unsafe or damaged."""
import re

import pytest
import torch

from medrun.errors import MedrunError
from medrun.runs import load_checkpoint


def test_a_truncated_checkpoint_is_reported_as_damaged_never_as_unsafe(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for allow in (False, True):
        with pytest.raises(MedrunError, match="is damaged or not a PyTorch checkpoint") as e:
            load_checkpoint(path, allow_unsafe=allow)
        assert "allow_unsafe_checkpoints" not in str(e.value)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(MedrunError, match="empty.ckpt is damaged"):
        load_checkpoint(tmp_path / "empty.ckpt")


@pytest.mark.slow
def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from medrun.runs import FolderLock

    lock = FolderLock(tmp_path / "run", "run folder")
    with pytest.raises(MedrunError, match=rf"run folder .*run is being written by process {os.getpid()} on "
                                          rf"{socket.gethostname()}"):
        FolderLock(tmp_path / "run", "run folder")
    # another process too (flock is per open file, so this is what two `medrun resume RUN` see)
    probe = ("from pathlib import Path; from medrun.runs import FolderLock; from medrun.errors import MedrunError\n"
             f"try:\n    FolderLock(Path({str(tmp_path / 'run')!r}), 'run folder')\nexcept MedrunError as e:\n"
             "    print(e)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    assert f"being written by process {os.getpid()}" in out
    lock.release()
    FolderLock(tmp_path / "run", "run folder").release()  # free again once the holder is done


def test_two_runs_into_one_run_dir_never_both_claim_it(tmp_path):
    import medrun
    from tests.conftest import TINY

    from medrun.runs import FolderLock

    holder = FolderLock(tmp_path / "shared", "run_dir=")  # another process training into it right now
    with pytest.raises(MedrunError, match="run_dir= .*shared is being written by process"):
        medrun.train(medrun.compose("train", [*TINY, f"run_dir={tmp_path / 'shared'}"]))
    assert not (tmp_path / "shared" / "config.yaml").exists()
    holder.release()
    run_dir, summary = medrun.train(medrun.compose("train", [*TINY, f"run_dir={tmp_path / 'shared'}"]))
    assert summary is not None
    FolderLock(run_dir, "run folder").release()  # released at the end of the run


def test_damaged_run_folder_files_are_one_line_naming_the_file(tiny_run, tmp_path, capsys):
    import json
    import shutil

    from medrun.cli import main
    from medrun.runs import read_json

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    (run_dir / "fold_0" / "metrics.json").write_text("{not json")
    assert main(["aggregate", str(run_dir)]) == 2
    assert "fold_0/metrics.json is damaged (not JSON" in capsys.readouterr().err
    (run_dir / "cv_summary.json").write_text(json.dumps({"experiment": "x", "std": {}}))
    assert main(["compare", str(run_dir), str(run_dir)]) == 2
    assert "cv_summary.json lacks 'mean'" in capsys.readouterr().err
    (run_dir / "config.yaml").write_text("a: [unclosed\n")
    assert main(["eval", f"run={run_dir}"]) == 2
    assert "config.yaml is damaged" in capsys.readouterr().err
    with pytest.raises(MedrunError, match="nothing.json is missing"):
        read_json(tmp_path / "nothing.json")


def test_an_experiment_folder_given_as_a_run_names_its_newest_run(tmp_path):
    from medrun.runs import require_run_dir

    for name in ("2026-11-30_10-00-00", "2026-12-01_09-00-00"):
        (tmp_path / "unet" / name).mkdir(parents=True)
        (tmp_path / "unet" / name / "config.yaml").write_text("name: unet\n")
        (tmp_path / "unet" / name / "splits.json").write_text("{}")
    (tmp_path / "unet" / "compare").mkdir()  # not a run
    with pytest.raises(MedrunError, match=r"unet is not a medrun run folder \(missing config.yaml, splits.json\); it "
                                          r"holds 2 run folder\(s\), the newest .*unet/2026-12-01_09-00-00$"):
        require_run_dir(tmp_path / "unet")
    with pytest.raises(MedrunError, match=r"pass a folder under outputs/<experiment>/"):
        require_run_dir(tmp_path / "nothing")
    assert require_run_dir(tmp_path / "unet" / "2026-11-30_10-00-00").name == "2026-11-30_10-00-00"


def test_file_part_makes_names_from_data_safe_and_distinct():
    from medrun.runs import file_part

    assert file_part("benign_0") == "benign_0"  # ordinary names are kept
    for name in ("../../etc/x", "a" * 300, "<b>|c", ".hidden", ""):
        part = file_part(name)
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,72}", part), part
    assert file_part("a/b") != file_part("a_b") and file_part("a" * 300) != file_part("a" * 301)


def test_lfs_pointers_empty_archives_and_flipped_weight_bytes_are_damaged_not_unsafe(tmp_path):
    import zipfile

    lfs = tmp_path / "best.ckpt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234\n")
    with pytest.raises(MedrunError, match="is a Git LFS pointer, not the checkpoint itself"):
        load_checkpoint(lfs, allow_unsafe=True)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(MedrunError, match="empty.zip is damaged") as e:
        load_checkpoint(tmp_path / "empty.zip")
    assert "allow_unsafe_checkpoints" not in str(e.value)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100_000)}}, path)
    data = bytearray(path.read_bytes())
    data[data.index(torch.ones(16).numpy().tobytes()) + 1001] ^= 0xFF  # inside the weights: torch.load reads it
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["state_dict"]["w"].sum() != 100_000
    with pytest.raises(MedrunError, match=r"last.ckpt is damaged .*does not match the CRC-32"):
        load_checkpoint(path)
