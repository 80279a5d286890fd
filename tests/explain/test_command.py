"""`medrun explain` (#14): Grad-CAM that peaks on a known lesion, faithfulness that separates a trained from a
random model, clustering agreement, and runs of segmenters and classifiers on real data."""
import json

import numpy as np
import pytest
import torch

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from medrun.explain.cam import compute_cams, faithfulness, mass_inside, targets_for
from medrun.explain.clusters import agreement
from medrun.explain.command import explain_run
from medrun.explain.layers import find_layer
from medrun.models.layers import default_cam_layer

LEARNS = ["experiment=quickstart", "cv=holdout", "trainer.max_epochs=25", "data.count=48", "data.batch_size=4",
          "data.image_size=[32,32]", "data.source_size=[32,32]", "model.filters=[8,16,32,64,128]",
          "task.optimizer.lr=3e-3", "callbacks.early_stopping.enabled=false", "callbacks.progress=none", "logger=none"]


@pytest.fixture(scope="module")
def lesion_run(module_tmp):
    """A small Sharp U-Net that has learnt the synthetic lesions (Dice about 0.6 after 25 epochs)."""
    out = module_tmp
    return medrun.train(medrun.compose("train", [*LEARNS, f"paths.output_dir={out}"]))[0]


def test_gradcam_of_a_trained_segmenter_peaks_on_the_lesion(lesion_run):
    out_dir, result = explain_run(lesion_run, n=8, compare=["gradcam"], clusters=["k-means", "agglomerative"], k=2)
    with_lesion = [r for r in result["images"] if r["mask_pixels"] > 0]
    assert with_lesion and result["mask_area_fraction"] < 0.15
    # most of the heat lies on the lesions although they cover a few per cent of the images
    assert result["cam_mass_in_mask"] > 0.5
    assert all((out_dir / f"cam_{r['id']}.png").stat().st_size > 500 for r in result["images"])
    assert (out_dir / "montage.png").is_file() and (out_dir / "tsne.png").is_file()
    assert (out_dir / "clusters_gradcam.png").is_file() and "| gradcam |" in (out_dir / "summary.md").read_text()
    saved = json.loads((out_dir / "explain.json").read_text())
    assert saved["layer"] == "decoder.3" and set(saved["clusters"]["sizes"]) == {"k-means", "agglomerative"}
    # summary.md reports the clusters whether or not there is an agreement to measure
    text = (out_dir / "summary.md").read_text()
    sizes = saved["clusters"]["sizes"]["k-means"]
    assert f"| k-means | {', '.join(map(str, sizes))} |" in text
    nearest = saved["clusters"]["nearest_to_centre"]
    assert "Nearest each k-means centre: " + ", ".join(f"{c}: {i}" for c, i in nearest.items()) in text
    page = (lesion_run / "report.html").read_text()  # explain refreshed the run's page with its figures
    assert f"Explanation {out_dir.name}" in page and 'alt="montage"' in page and 'alt="tsne"' in page


def test_road_separates_a_trained_model_from_a_random_one(lesion_run):
    from medrun.inference import load_run
    from medrun.models.sharp_unet import SharpUNet

    run = load_run(lesion_run, device="cpu")
    trained = run.models[0].net.eval()
    torch.manual_seed(0)
    random = SharpUNet(1, 1, filters=[8, 16, 32, 64, 128]).eval()
    store = medrun.api.build_store(run.config, preload=False)
    ids = run.splits["folds"][0]["test"][:6]
    x = torch.stack([torch.as_tensor(store.get(store.index[i])[0], dtype=torch.float32).permute(2, 0, 1) / 255
                     for i in ids])
    gaps = {}
    for name, net in (("trained", trained), ("random", random)):
        with torch.no_grad():
            targets = targets_for(net(x), spatial=True)
        cams = compute_cams(net, find_layer(net, default_cam_layer(net)), "gradcam", x, targets)
        gaps[name] = faithfulness(net, x, cams, targets)["road_gap"]
    # removing the pixels the trained model's CAM ranks first costs it far more than removing the last ones
    assert gaps["trained"] > 0 and gaps["trained"] > gaps["random"]


def test_clustering_agreement_bounds():
    a = np.array([0, 0, 1, 1, 2, 2])
    out = agreement({"a": a, "renamed": np.array([2, 2, 0, 0, 1, 1]), "other": np.array([0, 1, 0, 1, 0, 1])})
    assert out["a vs renamed"] == {"ari": 1.0, "nmi": 1.0}  # identical partitions, other label names
    for v in out.values():
        assert -1 <= v["ari"] <= 1 and 0 <= v["nmi"] <= 1
    assert out["a vs other"]["ari"] < 0.1


def test_pointing_game_leaves_out_an_all_zero_cam(tmp_path):
    from medrun.explain.command import _table

    cams = np.zeros((3, 4, 4))
    cams[0, 0, 0], cams[1] = 1, 1  # the third map is all zero (Grad-CAM after a ReLU that kept nothing)
    masks = np.zeros((3, 4, 4))
    masks[:, 0, :2] = 1
    shares = mass_inside(cams, masks)
    assert shares[:2].tolist() == [1.0, 2 / 16] and np.isnan(shares[2])  # not 0.0: there is no heat to place
    result = {"run": "r", "fold": 0, "layer": "l", "method": "gradcam", "faithfulness": {},
              "cam_mass_in_mask": None, "all_zero_cams": 3}
    _table(result, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "3 image(s) with a mask have an all-zero gradcam map" in text and "pointing game):" not in text


def test_classifier_explain_on_real_dicom_keeps_tags_out(shared_data, tmp_path, capsys):
    import pydicom

    cfg = medrun.compose("train", ["experiment=resnext50_dicom_contrast", f"data.root={shared_data}/dicom_ct",
                                   "cv.folds=2", "data.image_size=[32,32]", "trainer.max_epochs=1", "logger=none",
                                   "callbacks.progress=none", "model=timm", "model.backbone=resnet18",
                                   f"paths.output_dir={tmp_path}"])
    run_dir, _ = medrun.train(cfg)
    assert main(["explain", f"run={run_dir}", "n=6", "compare=gradcam,layercam", "clusters=k-means,birch",
                 "k=2", "embed=umap"]) == 0
    out_dir = next((run_dir / "explain").iterdir())
    result = json.loads((out_dir / "explain.json").read_text())
    assert result["layer"] == "layer4" and set(result["faithfulness"]) == {"gradcam", "layercam"}
    assert list(out_dir.glob("montage_*.png")) and (out_dir / "umap.png").is_file()
    assert {r["predicted"] for r in result["images"]} <= {"False", "True"}
    # the predictions (TP / FP / FN panels, CAM targets) follow the run's own eval decision, as predict's do: a
    # threshold of 0 on the positive class ("True") predicts it everywhere, one above 1 nowhere
    for threshold, expected in ((0.0, {"True"}), (1.01, {"False"})):
        folder = run_dir / "eval" / f"manual_{threshold}"
        folder.mkdir(parents=True)
        (folder / "postprocessing.json").write_text(json.dumps(
            {"tta": "none", "threshold": threshold,
             "provenance": {"eval": folder.name, "scored_on": "the run's own data", "searched_on": "val"}}))
        _, decided = explain_run(run_dir, n=6, compare=["gradcam"])
        assert {r["predicted"] for r in decided["images"]} == expected
        assert decided["predictions_by"].startswith(f"eval/{folder.name}")
    tags = set()
    for p in (shared_data / "dicom_ct" / "dicom_dir").glob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        tags |= {str(ds.PatientID), str(ds.get("PatientName", "")) or "-", str(ds.get("StudyDate", "")) or "-"}
    tags -= {"-", ""}
    for f in out_dir.iterdir():
        if f.suffix in (".json", ".md"):
            assert not any(t in f.read_text() for t in tags)
    capsys.readouterr()
    assert main(["explain", f"run={run_dir}", "layer=layer9"]) == 2
    assert "layer='layer9' is not a module of this network; valid names include" in capsys.readouterr().err
    with pytest.raises(MedrunError, match="target='Maybe': give a class of this classifier"):
        explain_run(run_dir, target="Maybe")
    with pytest.raises(MedrunError, match="unknown CAM method 'magic'"):
        explain_run(run_dir, method="magic")
    # a failure after the folder was made (k larger than the held-out part) leaves no partial folder behind
    before = sorted((run_dir / "explain").iterdir())
    with pytest.raises(MedrunError, match="clusters need more than"):
        explain_run(run_dir, n=2, compare=["gradcam"], clusters=["k-means"], k=500)
    assert sorted((run_dir / "explain").iterdir()) == before
