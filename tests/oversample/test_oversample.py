"""CycleGAN oversampling (#13): reference shapes, a GAN that learns on real MedMNIST images, synthetic images
made from and added to a fold's training part only, resume mid-GAN, and the duplicate control."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medrun
from medrun.errors import MedrunError
from medrun.oversample.cyclegan import CycleGAN, Generator, discriminator

SMALL_GAN = ["oversample.size=[32,32]", "oversample.limit_batches=4", "oversample.generator.widths=[8,16,32,64,64]",
             "oversample.discriminator.width=8"]
TINY_CLASSIFIER = ["experiment=melanet_breastmnist", "data.image_size=[32,32]", "trainer.max_epochs=1",
                   "+trainer.limit_train_batches=3", "callbacks.progress=none", "logger=none", "html_report=false"]
TINY_MELANET = [*TINY_CLASSIFIER, *SMALL_GAN]


def test_generator_and_discriminator_have_the_reference_shapes():
    g = Generator(3)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        y = g(x)
        scores = discriminator(3)(x)[-1]
    assert y.shape == x.shape and y.abs().max() <= 1  # tanh image
    assert scores.shape == (1, 1, 30, 30)  # the 70x70 PatchGAN on 256x256
    downs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(downs) == 7  # 256 -> 2 after 7 halvings, the innermost level at 1x1 (unet_256)


def test_a_few_gan_steps_reduce_the_cycle_loss_on_real_images(shared_data):
    data = np.load(shared_data / "medmnist" / "breastmnist.npz")
    images, labels = data["train_images"], data["train_labels"].ravel()
    to_tensor = lambda a: torch.from_numpy(a[:, None].repeat(3, 1)).float() / 127.5 - 1  # noqa: E731
    a, b = to_tensor(images[labels == 1][:32]), to_tensor(images[labels == 0][:32])
    a = torch.nn.functional.interpolate(a, size=32)
    b = torch.nn.functional.interpolate(b, size=32)
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    pl.seed_everything(0, verbose=False)
    cfg = medrun.compose("train", ["oversample=cyclegan", *SMALL_GAN]).oversample
    gan = CycleGAN({**OmegaConf.to_container(cfg), "channels": 3})
    with torch.no_grad():
        before = float(gan.cycle_loss(a[:8], b[:8]))
    pairs = [{"a": a[i], "b": b[(i * 7) % 32]} for i in range(32)]
    trainer = pl.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(gan, torch.utils.data.DataLoader(pairs, batch_size=4, shuffle=True))
    assert trainer.global_step == 6 * 8 * 2  # manual optimisation: two optimiser steps per batch
    with torch.no_grad():
        after = float(gan.cycle_loss(a[:8], b[:8]))
    assert after < 0.9 * before  # 48 generator steps: the round trip already loses less of the image


@pytest.fixture(scope="module")
def melanet_run(shared_data, module_tmp):
    out = module_tmp
    cfg = medrun.compose("train", [*TINY_MELANET, f"data.root={shared_data}/medmnist", "oversample.epochs=1",
                                   "logger=csv", f"paths.output_dir={out}"])
    return medrun.train(cfg)


def test_synthetic_images_come_from_and_go_to_the_training_part_only(melanet_run):
    run_dir, summary = melanet_run
    splits = json.loads((run_dir / "splits.json").read_text())
    fold = splits["folds"][0]
    over = run_dir / "fold_0" / "oversampling"
    rows = list(csv.DictReader(open(over / "manifest.csv")))
    train = set(fold["train"])
    assert len(rows) == 399  # every benign/normal training image of BreastMNIST, translated
    assert all(r["source_id"] in train for r in rows) and all(r["class"] == "malignant" for r in rows)
    assert not {r["synthetic_id"] for r in rows} & set(fold["val"] + fold["test"] + fold["train"])  # splits stay real
    assert all((over / r["file"]).is_file() for r in rows[:20]) and (over / "montage.png").stat().st_size > 5000
    curves = list(csv.DictReader(open(over / "logs" / "metrics.csv")))
    assert {"gan/generator", "gan/discriminator", "gan/cycle"} <= set(curves[0])
    predictions = list(csv.DictReader(open(run_dir / "fold_0" / "predictions.csv")))
    assert {p["id"] for p in predictions} == set(fold["test"])  # scored on real test images


def test_an_interrupted_gan_resumes(shared_data, tmp_path, monkeypatch):
    from medrun.runs import load_checkpoint

    overrides = [*TINY_MELANET, f"data.root={shared_data}/medmnist", "oversample.epochs=2", "cv.use_fixed_test=true",
                 "trainer.deterministic=true", "logger=csv", f"paths.output_dir={tmp_path}"]
    # the same run uninterrupted: the resumed one must make the same synthetic images
    whole_dir, _ = medrun.train(medrun.compose("train", [*overrides[:-1], f"paths.output_dir={tmp_path / 'whole'}"]))
    step = CycleGAN.training_step

    def dies_in_epoch_two(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 2:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(CycleGAN, "training_step", dies_in_epoch_two)
    with pytest.raises(RuntimeError, match="killed"):
        medrun.train(medrun.compose("train", overrides))
    run_dir = next((tmp_path / "melanet_breastmnist").iterdir())
    last = run_dir / "fold_0" / "oversampling" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["epoch"] == 0 and not (run_dir / "fold_0" / "oversampling" / "manifest.csv").exists()
    monkeypatch.undo()
    _, summary = medrun.api.resume(run_dir)
    done = load_checkpoint(last)
    assert done["epoch"] == 1 and done["global_step"] == 2 * 2 * 4  # 2 epochs x 4 batches x 2 optimisers
    assert summary is not None and (run_dir / "fold_0" / "oversampling" / "manifest.csv").is_file()
    # the GAN's RNG state came back with its checkpoint: the same synthetic images as the uninterrupted run
    resumed = sorted((run_dir / "fold_0" / "oversampling" / "synthetic").glob("*.png"))
    whole = sorted((whole_dir / "fold_0" / "oversampling" / "synthetic").glob("*.png"))
    assert [p.name for p in resumed] == [p.name for p in whole] and resumed
    same = [np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))) for a, b in zip(resumed, whole)]
    assert all(same), f"{sum(same)} of {len(same)} synthetic images equal"
    # and the GAN's curves keep the epoch before the interruption
    epochs = {r["epoch"] for r in csv.DictReader(open(run_dir / "fold_0" / "oversampling" / "logs" / "metrics.csv"))}
    assert {"0", "1"} <= epochs


def test_duplicate_oversampling_is_the_control(shared_data, tmp_path):
    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", "oversample=duplicate",
                                   f"paths.output_dir={tmp_path}"])
    run_dir, _ = medrun.train(cfg)
    fold = json.loads((run_dir / "splits.json").read_text())["folds"][0]
    rows = list(csv.DictReader(open(run_dir / "fold_0" / "oversampling" / "manifest.csv")))
    from medrun.api import build_store

    store = build_store(cfg, preload=False)
    minority = {i for i in fold["train"] if store.samples[store.index[i]].label == 0}
    assert len(rows) == len(fold["train"]) - 2 * len(minority)  # the classes are balanced afterwards
    assert {r["source_id"] for r in rows} <= minority


def test_augment_5x_grows_the_whole_training_set_as_the_thesis(shared_data, tmp_path):
    """MelaNet's Augment-5x: five augmented copies of every training image of every class (900 -> 5,400), labelled
    as their source; the skew stays the real one."""
    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", "oversample=augment_5x"])
    run_dir, _ = medrun.train(cfg)
    fold = json.loads((run_dir / "splits.json").read_text())["folds"][0]
    from medrun.api import build_store

    store = build_store(cfg, preload=False)
    label = {s.id: s.label for s in store.samples}
    made = [row for folder in sorted((run_dir / "fold_0" / "oversampling").glob("all_*"))
            for row in csv.DictReader(open(folder / "manifest.csv"))]
    assert len(made) == 5 * len(fold["train"])  # every training image, both classes
    assert sorted(r["source_id"] for r in made) == sorted(fold["train"] * 5)
    classes = list(cfg.data.classes)
    assert all(r["class"] == classes[label[r["source_id"]]] for r in made)  # a copy keeps its source's class
    training = json.loads((run_dir / "fold_0" / "oversampling" / "training_set.json").read_text())
    counts = np.bincount([label[i] for i in fold["train"]], minlength=2)
    assert training["classes"] == {c: 6 * int(n) for c, n in zip(classes, counts)}
    assert training["skew"] == pytest.approx(counts.max() / counts.min())  # the real classes' ratio, unchanged
    with pytest.raises(MedrunError, match="oversample.classes=all applies to oversample=augment"):
        medrun.train(medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist",
                                              "oversample=duplicate", "++oversample.classes=all",
                                              f"paths.output_dir={tmp_path}"]))


@pytest.mark.parametrize("choice,factor", [("augment_5x_minority", 5), ("augment_10x_minority", 10)])
def test_augment_minority_variants_copy_each_minority_training_image_factor_times(shared_data, tmp_path, choice,
                                                                                   factor):
    from medrun.api import build_splits, build_store
    from medrun.oversample.fold import translations
    from medrun.oversample.methods import OVERSAMPLERS

    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", f"oversample={choice}"])
    store = build_store(cfg, preload=False)
    fold = build_splits(cfg, store)["folds"][0]
    (plan,) = translations(cfg, store, fold["train"])
    majority, minority = plan["source_ids"], plan["target_ids"]
    made = OVERSAMPLERS.get(cfg.oversample.name)(cfg, store, fold, tmp_path, majority, minority)
    assert cfg.oversample.factor == factor and len(made) == factor * len(minority)
    assert sorted(s for s, _ in made) == sorted(minority * factor)  # from the fold's minority training images only
    changed = [not np.array_equal(image, store.get(store.index[s])[0]) for s, image in made]
    assert all(image.shape == store.get(store.index[s])[0].shape for s, image in made)
    assert np.mean(changed) > 0.5  # augmented copies, not duplicates


def test_cyclegan_objective_is_the_texts_and_the_notebooks_by_name():
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    for choice, criterion, identity in (("cyclegan", "bce", 0.0), ("cyclegan_reference_code", "least_squares", 0.1)):
        cfg = medrun.compose("train", [f"oversample={choice}", *SMALL_GAN]).oversample
        gan = CycleGAN({**OmegaConf.to_container(cfg), "channels": 3})
        assert (gan.adversarial.criterion, float(cfg.lambda_identity), float(cfg.lambda_cycle)) == (criterion, identity, 10)
        with torch.no_grad():
            total, adversarial, cycle, _, _ = gan.generator_loss(a, b)
            scores = gan.d_b(gan.g_ab(a))[-1], gan.d_a(gan.g_ba(b))[-1]
            if criterion == "bce":  # log-likelihood: -log D(G(x)) for each generator, no identity term
                expected = sum(F.binary_cross_entropy_with_logits(s, torch.ones_like(s)) for s in scores)
                assert float(adversarial) == pytest.approx(float(expected), rel=1e-5)
                assert float(total) == pytest.approx(float(adversarial + 10 * cycle), rel=1e-5)
            else:  # the notebook's mean squared error, plus its identity term
                expected = sum(F.mse_loss(F.leaky_relu(s, 0.05), torch.ones_like(s)) for s in scores)  # MONAI's
                assert float(adversarial) == pytest.approx(float(expected), rel=1e-5)
                assert float(total) > float(adversarial + 10 * cycle)


def test_manifest_quotes_file_names_and_keeps_its_paths_inside_the_run(shared_data, tmp_path, monkeypatch):
    from medrun.api import build_splits, build_store
    from medrun.errors import MedrunError
    from medrun.oversample.methods import OVERSAMPLERS
    from medrun.oversample.fold import oversample_fold

    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", "oversample=duplicate"])
    store = build_store(cfg, preload=False)
    fold = build_splits(cfg, store)["folds"][0]
    image = store.get(0)[0]
    monkeypatch.setitem(OVERSAMPLERS._entries, "duplicate",
                        lambda *a: [("odd, \"name\"", image), ("plain", image)])
    fold_dir = tmp_path / "fold_0"
    out_store, out_fold = oversample_fold(cfg, store, fold, fold_dir)
    rows = list(csv.DictReader(open(fold_dir / "oversampling" / "manifest.csv")))
    assert [r["source_id"] for r in rows] == ["odd, \"name\"", "plain"]  # one field each, read back as written
    assert len(out_fold["train"]) == len(fold["train"]) + 2
    again = oversample_fold(cfg, store, fold, fold_dir)[1]  # a resumed fold reads the same manifest
    assert again["train"] == out_fold["train"]
    text = (fold_dir / "oversampling" / "manifest.csv").read_text().replace(rows[1]["file"], "../../../outside.png")
    (fold_dir / "oversampling" / "manifest.csv").write_text(text)
    with pytest.raises(MedrunError, match="'../../../outside.png' points outside"):
        oversample_fold(cfg, store, fold, fold_dir)


def test_translators_from_chosen_classes_pool_and_trace_to_their_source(shared_data, tmp_path):
    from medrun.api import build_splits, build_store
    from medrun.oversample.fold import oversample_fold

    cfg = medrun.compose("train", [
        "experiment=densenet121_retinamnist", f"data.root={shared_data}/medmnist", "data.image_size=[32,32]",
        "oversample=cyclegan", *SMALL_GAN, "oversample.epochs=1", "logger=none", "callbacks.progress=none",
        "oversample.translators=[{source: grade0, target: grade3},{source: [grade1,grade2], target: grade3}]"])
    store = build_store(cfg, preload=False)
    fold = build_splits(cfg, store)["folds"][0]
    (tmp_path / "splits.json").write_text("{}")  # the run folder, as the GAN's loggers look for it
    fold_dir = tmp_path / "fold_0"
    new_store, new_fold = oversample_fold(cfg, store, fold, fold_dir)
    classes = list(cfg.data.classes)
    label = {i: classes[store.samples[store.index[i]].label] for i in fold["train"]}
    for folder, sources in (("grade0_to_grade3", {"grade0"}), ("grade1+grade2_to_grade3", {"grade1", "grade2"})):
        rows = list(csv.DictReader(open(fold_dir / "oversampling" / folder / "manifest.csv")))
        # every source-class training image translated once, each traced to it; nothing from val or test
        assert sorted(r["source_id"] for r in rows) == sorted(i for i in fold["train"] if label[i] in sources)
        assert all(r["class"] == "grade3" for r in rows)
    synthetic = [i for i in new_fold["train"] if i.startswith("syn")]
    assert len(synthetic) == sum(label[i] in {"grade0", "grade1", "grade2"} for i in fold["train"])  # pooled
    assert all(new_store.samples[new_store.index[i]].label == classes.index("grade3") for i in synthetic)
    used = json.loads((fold_dir / "oversampling" / "training_set.json").read_text())
    assert used["synthetic"] == len(synthetic) and [t["folder"] for t in used["translators"]] == \
        ["grade0_to_grade3", "grade1+grade2_to_grade3"]


@pytest.mark.parametrize("train_on", ["real", "real+synthetic", "synthetic"])
def test_train_on_arms_and_the_skew_of_what_is_trained_on(shared_data, tmp_path, train_on):
    from medrun.api import build_splits, build_store
    from medrun.oversample.fold import oversample_fold

    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", "oversample=duplicate",
                                   f"oversample.train_on={train_on}"])
    store = build_store(cfg, preload=False)
    fold = build_splits(cfg, store)["folds"][0]
    new_store, new_fold = oversample_fold(cfg, store, fold, tmp_path / "fold_0")
    classes = list(cfg.data.classes)
    labels = [classes[new_store.samples[new_store.index[i]].label] for i in new_fold["train"]]
    real_malignant = [i for i in new_fold["train"] if i in store.index and
                      classes[store.samples[store.index[i]].label] == "malignant"]
    synthetic = [i for i in new_fold["train"] if i not in store.index]
    if train_on == "real":
        assert new_fold["train"] == fold["train"] and not synthetic
    elif train_on == "synthetic":
        assert real_malignant == [] and synthetic  # no real image of the target class is trained on
    else:
        assert real_malignant and synthetic
    used = json.loads((tmp_path / "fold_0" / "oversampling" / "training_set.json").read_text())
    counts = {c: labels.count(c) for c in classes}
    assert used["classes"] == counts and used["train_on"] == train_on
    assert used["skew"] == pytest.approx(counts["normal_or_benign"] / counts["malignant"])


@pytest.mark.slow
def test_a_train_on_sweep_on_the_stand_in_writes_one_table_with_sensitivity_fn_and_skew(shared_data, tmp_path):
    from medrun.cli import main

    code = main(["-m", "train", "experiment=cyclegan_pneumoniamnist", f"data.root={shared_data}/medmnist",
                 "data.image_size=[32,32]", "model.backbone=resnet18", *SMALL_GAN, "oversample.epochs=1",
                 "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "callbacks.progress=none", "logger=none",
                 "html_report=false", f"paths.output_dir={tmp_path}", "oversample.train_on=real,real+synthetic,synthetic"])
    assert code == 0
    summary = json.loads(next((tmp_path / "multirun").glob("*/multirun_summary.json")).read_text())
    arms = {next(o for o in r["overrides"] if o.startswith("oversample.train_on=")).split("=")[1]: r
            for r in summary["jobs"]}
    assert set(arms) == {"real", "real+synthetic", "synthetic"}
    skew = {arm: r["mean"]["training_skew"] for arm, r in arms.items()}
    assert skew["real"] == pytest.approx(3494 / 388, rel=0.05)  # pneumonia per normal image in the training part
    assert skew["real+synthetic"] < 1 < skew["real"]
    for arm, r in arms.items():
        saved = json.loads((Path(r["run_dir"]) / "fold_0" / "metrics.json").read_text())["training_set"]
        assert r["mean"]["training_skew"] == pytest.approx(saved["classes"]["pneumonia"] / saved["classes"]["normal"])
        assert {"sensitivity_normal", "fn_normal"} <= set(r["mean"])
        # the oversampled class's numbers under the names the thesis' reproduce table reads
        assert r["mean"]["sensitivity_target"] == r["mean"]["sensitivity_normal"]
        assert r["mean"]["fn_target"] == r["mean"]["fn_normal"]
    table = next((tmp_path / "multirun").glob("*/multirun_summary.md")).read_text()
    header = next(line for line in table.splitlines() if line.startswith("| job |"))
    assert "| sensitivity_normal | fn_normal | training_skew |" in header  # one table, the three arms as rows


def test_bagging_head_is_fitted_on_training_part_features_only(shared_data, tmp_path):
    from sklearn.ensemble import BaggingClassifier

    cfg = medrun.compose("train", [*TINY_CLASSIFIER, f"data.root={shared_data}/medmnist", "oversample=duplicate",
                                   "model=timm", "model.backbone=resnet18", "task.feature_classifier=bagging",
                                   f"paths.output_dir={tmp_path}"])
    fitted = []
    fit = BaggingClassifier.fit
    BaggingClassifier.fit = lambda self, x, y: fitted.append((x.shape, y.copy())) or fit(self, x, y)
    try:
        run_dir, summary = medrun.train(cfg)
    finally:
        BaggingClassifier.fit = fit
    fold = json.loads((run_dir / "splits.json").read_text())["folds"][0]
    synthetic = [r["synthetic_id"] for r in csv.DictReader(open(run_dir / "fold_0" / "oversampling" / "manifest.csv"))]
    record = json.loads((run_dir / "fold_0" / "bagging.json").read_text())
    # the training part as trained (real training images and the fold's synthetic ones), never val or test
    assert record["fitted_on"] == sorted([*fold["train"], *synthetic])
    assert not set(record["fitted_on"]) & set(fold["val"] + fold["test"])
    (shape, labels), = fitted
    assert shape == (len(fold["train"]) + len(synthetic), 512) and np.bincount(labels)[0] == np.bincount(labels)[1]
    predictions = list(csv.DictReader(open(run_dir / "fold_0" / "predictions.csv")))
    assert sorted(p["id"] for p in predictions) == sorted(fold["test"]) and summary["mean"]["auc_macro"] >= 0


def test_a_translation_only_class_feeds_a_translator_and_is_never_predicted(shared_data, tmp_path):
    """Tables 2.2/2.3's "real + G_NC + G_PC": a normal-vs-COVID classifier whose second synthetic set is translated
    from pneumonia images. Real PneumoniaMNIST images in class folders stand in (covid: a few pneumonia images)."""
    from medrun.api import build_splits, build_store
    from medrun.errors import MedrunError
    from medrun.oversample.fold import oversample_fold

    npz = np.load(shared_data / "medmnist" / "pneumoniamnist_subset.npz")
    images, labels = npz["train_images"], npz["train_labels"].ravel()
    normal, pneumonia = np.flatnonzero(labels == 0)[:24], np.flatnonzero(labels == 1)
    for name, picks in (("normal", normal), ("pneumonia", pneumonia[:20]), ("covid", pneumonia[20:28])):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in picks:
            Image.fromarray(images[i]).save(tmp_path / "data" / name / f"{name}_{i}.png")
    overrides = ["experiment=densenet121_folder", f"data.root={tmp_path / 'data'}", "data.classes=[normal,covid]",
                 "data.channels=1", "data.image_size=[32,32]", "model.pretrained=null", "oversample=cyclegan",
                 *SMALL_GAN, "oversample.epochs=1", "logger=none", "callbacks.progress=none",
                 "oversample.translators=[{source: normal, target: covid},{source: pneumonia, target: covid}]"]
    cfg = medrun.compose("train", [*overrides, "data.translation_only=[pneumonia]"])
    store = build_store(cfg, preload=False)
    splits = build_splits(cfg, store)
    fold = splits["folds"][0]
    name = {s.id: s.id.split("_")[0] for s in store.samples}
    assert not any(name[i] == "pneumonia" for part in ("train", "val", "test") for i in fold[part])  # never predicted
    assert fold["translation_sources"] and all(name[i] == "pneumonia" for i in fold["translation_sources"])
    assert len(fold["translation_sources"]) < 20  # only the training part's share; validation and test ones dropped
    assert medrun.api.check_data(cfg)["class_balance"]["pneumonia"] == round(20 / 52, 4)  # still checked
    (tmp_path / "splits.json").write_text("{}")
    new_store, new_fold = oversample_fold(cfg, store, fold, tmp_path / "fold_0")
    made = {folder: list(csv.DictReader(open(tmp_path / "fold_0" / "oversampling" / folder / "manifest.csv")))
            for folder in ("normal_to_covid", "pneumonia_to_covid")}
    assert sorted(r["source_id"] for r in made["pneumonia_to_covid"]) == sorted(fold["translation_sources"])
    assert sorted(r["source_id"] for r in made["normal_to_covid"]) == sorted(i for i in fold["train"]
                                                                               if name[i] == "normal")
    used = json.loads((tmp_path / "fold_0" / "oversampling" / "training_set.json").read_text())
    trained = [new_store.samples[new_store.index[i]].label for i in new_fold["train"]]
    assert set(used["classes"]) == {"normal", "covid"} and max(trained) == 1  # only the classifier's two classes
    assert used["classes"] == {"normal": trained.count(0), "covid": trained.count(1)}
    assert used["skew"] == pytest.approx(trained.count(0) / trained.count(1))
    with pytest.raises(MedrunError, match="data.translation_only lists 'covid', which is also in data.classes"):
        build_store(medrun.compose("train", [*overrides, "data.translation_only=[covid]"]), preload=False)


def test_gan_images_are_padded_to_a_square_as_the_classifiers_are(tmp_path):
    from PIL import Image

    from medrun.data.build import build_store
    from medrun.oversample.translate import GanImages

    rng = np.random.default_rng(0)
    for name in ("benign", "malignant"):
        (tmp_path / name).mkdir()
        for k in range(2):  # wide images, as ISIC's are
            Image.fromarray(rng.integers(1, 255, (20, 40), dtype=np.uint8)).save(tmp_path / name / f"{k}.png")
    cfg = medrun.compose("train", ["experiment=densenet121_folder", f"data.root={tmp_path}", "data.image_size=[32,32]",
                                   "data.channels=1", "data.pad_to_square=true"])
    store = build_store(cfg)
    gan = GanImages(store, (32, 32), 1)(store.samples[0].id)
    classifier = torch.from_numpy(store.get(0)[0]).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(gan, classifier)
    assert (gan[:, :8] == -1).all() and (gan[:, 8:24] > -1).all()  # the pad borders the real images carry
