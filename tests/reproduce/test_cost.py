"""`medrun reproduce TABLE estimate=true`: each row's training cost, from FLOPs counted on its own network."""
import pytest
from omegaconf import OmegaConf

import medrun
from medrun.cli import main
from medrun.reproduce.cost import PER_IMAGES, estimate, image_flops
from tests.conftest import TINY
from tests.reproduce.test_command import TABLE


def test_the_estimate_counts_each_rows_trainings_images_and_flops_and_says_what_it_lacks(tmp_path, capsys):
    table = tmp_path / "test_table.yaml"
    OmegaConf.save(OmegaConf.create(TABLE), table)
    rows = {(r["row"], r["protocol"]): r for r in estimate(str(table))}
    paper, leak_free = rows[("tiny", "paper")], rows[("tiny", "leak_free")]
    cfg = {p: medrun.compose("train", ["experiment=quickstart", f"cv={cv}", *TINY])
           for p, cv in (("paper", "repeated_holdout"), ("leak_free", "kfold"))}
    assert paper["trainings"] == cfg["paper"].cv.repeats and leak_free["trainings"] == cfg["leak_free"].cv.folds
    assert paper["epochs"] == leak_free["epochs"] == cfg["paper"].trainer.max_epochs
    # the first fold's training part of the 12 synthetic images: fewer under k-fold than with one test part set aside
    assert 0 < leak_free["training_images"] < 12 and 0 < paper["training_images"] < 12
    # a convolutional network's FLOPs grow with the pixels: four times at twice the side
    wide = medrun.compose("train", ["experiment=quickstart", *TINY, "data.image_size=[64,64]"])
    assert image_flops(wide) == pytest.approx(4e9 * paper["gflops_per_image"], rel=0.01)
    for r in (paper, leak_free):
        n = r["trainings"] * r["epochs"] * r["training_images"]
        assert r["cpu_hours"] == pytest.approx(n * r["cpu_ms_per_image"] / 1e3 / 3600)
        assert r["gpu_minutes"] < r["cpu_hours"] * 60  # a GPU is faster than 2 CPU cores on any of these
    for protocol in ("paper", "leak_free"):
        assert rows[("too small", protocol)]["error"].startswith("data.image_size=[8, 8] does not fit")
        missing = rows[("no data", protocol)]
        assert missing["training_images"] is None  # its data is not here: the cost per PER_IMAGES images
        assert missing["cpu_hours"] == pytest.approx(
            missing["trainings"] * missing["epochs"] * PER_IMAGES * missing["cpu_ms_per_image"] / 1e3 / 3600)
    assert main(["reproduce", str(table), "estimate=true"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | paper |" in out and f"per {PER_IMAGES:,} images" in out and "not measured" in out
    assert main(["reproduce", str(table), "estimate=maybe"]) == 2
    assert "estimate=maybe: use true or false" in capsys.readouterr().err
