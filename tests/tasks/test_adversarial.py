"""Corizzo et al.'s adversarial setup (#14): a U-Net generator against a VGG16-BN discriminator trained on one
class, explained through the generator's bottleneck and the discriminator's Grad-CAM."""
import json

import numpy as np
import pytest
import torch

import medrun
from medrun.explain.command import explain_run
from medrun.models.adversarial import AdversarialNet

TINY = ["experiment=corizzo_adversarial_breastmnist", "data.image_size=[32,32]", "model.filters=[8,16,32,64,128]",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=4", "callbacks.progress=none", "logger=none"]


def test_the_networks_have_the_paper_shapes():
    net = AdversarialNet(3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert net(x).shape == (2, 1) and net.generate(x).shape == x.shape
    bottleneck = [m for m in net.generator.encoder[-1] if isinstance(m, torch.nn.Conv2d)][-1]  # the deepest conv
    assert bottleneck.out_channels == 1024
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.discriminator.features) == 13  # VGG16-BN
    # the generator has batch norm after each of its 3x3 convolutions, as the paper's
    convs = [m for m in net.generator.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    norms = [m for m in net.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(convs) == 18
    stage = list(net.generator.encoder[0])
    assert [type(m).__name__ for m in stage] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    # the embedding length is a layer's width, not a projection afterwards
    for width in (256, 512):
        small = AdversarialNet(3, filters=(8, 16, 32, 64, 1024), embedding=width)
        assert [m for m in small.generator.encoder[-1] if isinstance(m, torch.nn.Conv2d)][-1].out_channels == width


def test_generator_trains_on_one_class_and_explain_uses_its_bottleneck(shared_data, tmp_path, monkeypatch):
    from medrun.tasks.adversarial import AdversarialTask

    seen = []
    step = AdversarialTask.training_step

    def recording(self, batch, batch_idx):
        seen.append(batch["target"].tolist())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(AdversarialTask, "training_step", recording)
    generate = AdversarialNet.generate
    generated = []
    monkeypatch.setattr(AdversarialNet, "generate", lambda self, x: generated.append(len(x)) or generate(self, x))
    run_dir, summary = medrun.train(medrun.compose("train", [*TINY, f"data.root={shared_data}/medmnist",
                                                             f"paths.output_dir={tmp_path}"]))
    monkeypatch.undo()
    trained = [sum(t == 1 for t in labels) for labels in seen]  # class 1: normal_or_benign, the trained class
    assert any(0 < n < len(labels) for n, labels in zip(trained, seen))  # batches hold both classes ...
    assert generated[:len(trained)] == [n for n in trained if n]  # ... and the generator only sees the trained one
    assert 0 <= summary["mean"]["auc"] <= 1
    # reference rows: a discriminator calling every test image the trained class, or none, on the same draws
    every, none = summary["trivial"]["all the trained class"]["mean"], summary["trivial"]["none the trained class"]["mean"]
    assert every["auc"] == none["auc"] == 0.5 and every["balanced_recall_macro"] == none["balanced_recall_macro"] == 0.5
    assert every["balanced_precision_macro"] == pytest.approx(0.25)  # one class predicted on a balanced draw
    assert "all the trained class" in (run_dir / "summary.md").read_text()
    assert "<h2>Cross-validation</h2>" in (run_dir / "report.html").read_text()  # no per-class curves to draw
    out_dir, result = explain_run(run_dir, n=4, compare=["gradcam"], clusters=["k-means", "agglomerative"], k=2)
    assert result["layer"].startswith("discriminator.features.")
    assert result["clusters"]["feature_layer"] == "generator.encoder.4" and result["clusters"]["dims"] == 128
    assert all(0 <= r["score"] <= 1 for r in result["images"])
    assert (out_dir / "montage_all.png").is_file() and (out_dir / "tsne.png").is_file()
    # the paper clusters the images of one class: here the trained class's held-out images only
    _, one = explain_run(run_dir, n=2, compare=["gradcam"], clusters=["k-means"], k=2,
                         cluster_classes=["normal_or_benign"])
    held = json.loads((run_dir / "splits.json").read_text())["fixed_test"]
    labels = dict(zip(held, np.load(shared_data / "medmnist" / "breastmnist.npz")["test_labels"].ravel().tolist()))
    assert one["clusters"]["classes"] == ["normal_or_benign"]
    assert sum(one["clusters"]["sizes"]["k-means"]) == sum(v == 1 for v in labels.values())
    # one class: nothing for the clusters to agree with (the two-class run above does have the row)
    assert one["clusters"]["agreement"] == {} and "k-means vs true label" in result["clusters"]["agreement"]
    assert json.loads((out_dir / "explain.json").read_text())["faithfulness"]["gradcam"]


def test_balanced_subset_scores_draw_equal_classes_and_average_the_draws():
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    from medrun.evaluation.classification import balanced_subset_scores

    y = np.array([0] * 80 + [1] * 20)
    pred = np.array([0] * 60 + [1] * 20 + [1] * 15 + [0] * 5)
    # classes smaller than per_class: every draw holds all images, so it equals sklearn on the whole set
    whole = balanced_subset_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), per_class=50, repeats=3)
    assert whole["balanced_per_class"] == 2
    p, r, f, _ = precision_recall_fscore_support([0, 0, 1, 1], [0, 1, 1, 1], average="macro")
    assert (whole["balanced_precision_macro"], whole["balanced_recall_macro"], whole["balanced_f1_macro"]) == \
        pytest.approx((p, r, f))
    s = balanced_subset_scores(y, pred, per_class=50, repeats=3)
    assert s["balanced_per_class"] == 20  # capped by the 20 images of class 1
    # class 1's recall is 15/20 in every draw (all of its images drawn); class 0's recall is about 60/80
    assert 0.6 < s["balanced_recall_macro"] < 0.85


def test_val_auc_needs_the_trained_class_and_another_in_every_validation_part():
    from types import SimpleNamespace

    from medrun.errors import MedrunError
    from medrun.tasks.adversarial import AdversarialTask

    cfg = medrun.compose("train", [*TINY, "data.classes=[normal_or_benign,malignant]"])
    labels = {"a": 0, "b": 1, "c": 1, "d": 1}
    store = SimpleNamespace(samples=[SimpleNamespace(id=i, label=y) for i, y in labels.items()],
                            indices=lambda ids: [list(labels).index(i) for i in ids])
    mixed = {"folds": [{"fold": 0, "train": ["c"], "val": ["a", "b"], "test": ["d"]}]}
    AdversarialTask.check_splits(cfg, mixed, store)
    one_class = {"folds": [{"fold": 0, "train": ["a"], "val": ["b", "c"], "test": ["d"]}]}
    with pytest.raises(MedrunError, match=r"fold 0's validation part \(2 images\) lacks either normal_or_benign "
                                          r"\(task.train_class\) or the other classes"):
        AdversarialTask.check_splits(cfg, one_class, store)
