"""fastai v1's Table 4.1 transforms (One Case): each one's effect on a known image, masks following the geometry,
and the paper-named configs using them."""
from __future__ import annotations

import numpy as np
import pytest

import medrun
from medrun.data.fastai_augment import LogitBrightness, LogitContrast, RandomZoom, SymmetricWarp
from medrun.data.transforms import augmentations


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def grey(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(1, -1, 1)


def test_brightness_and_contrast_act_on_the_logit():
    img = grey([0.1, 0.25, 0.5, 0.731059, 0.9])
    assert np.allclose(LogitBrightness(p=1).apply(img, change=0.5), img, atol=1e-6)  # 0.5: no change
    brighter = LogitBrightness(p=1).apply(img, change=0.6)
    assert brighter[0, 2, 0] == pytest.approx(0.6, abs=1e-6)  # logit(0.5) + logit(0.6) = logit(0.6)
    assert brighter[0, 3, 0] == pytest.approx(sigmoid(1 + np.log(1.5)), abs=1e-5)  # not 0.6 x the pixel
    contrast = LogitContrast(p=1).apply(img, factor=2.0)
    assert contrast[0, 2, 0] == pytest.approx(0.5, abs=1e-6)  # 0.5 stays
    assert contrast[0, 3, 0] == pytest.approx(sigmoid(2.0), abs=1e-5)  # logit 1 -> 2
    assert contrast[0, 0, 0] < 0.1 < 0.9 < contrast[0, 4, 0]
    as_uint8 = LogitBrightness(p=1).apply(np.full((2, 2, 3), 128, np.uint8), change=0.6)
    assert as_uint8.dtype == np.uint8 and int(as_uint8[0, 0, 0]) == round(255 * sigmoid(np.log(128 / 127) + np.log(1.5)))
    # the drawn parameters: change uniform in (0.4, 0.6), the contrast factor log-uniform in (0.8, 1.25)
    t = LogitContrast(p=1)
    t.set_random_seed(0)
    factors = np.array([t.get_params()["factor"] for _ in range(4000)])
    assert 0.8 <= factors.min() and factors.max() <= 1.25
    assert np.mean(factors < 1) == pytest.approx(0.5, abs=0.03)  # symmetric in log: half shrink, half stretch


def test_warp_and_zoom_move_image_and_mask_together():
    h, w = 64, 64
    yy, xx = np.mgrid[:h, :w]
    img = (xx * 4).astype(np.uint8)[..., None].repeat(3, 2)  # brightness grows left to right
    mask = ((xx >= 40) & (yy >= 20) & (yy < 44)).astype(np.uint8)
    warp = SymmetricWarp(p=1)
    warp.set_random_seed(1)
    identity = warp.get_params_dependent_on_data({"shape": (h, w)}, {})
    assert identity["matrix"].shape == (3, 3)
    still = SymmetricWarp(magnitude=(0.0, 0.0), p=1).get_params_dependent_on_data({"shape": (h, w)}, {})["matrix"]
    assert np.allclose(still, np.eye(3), atol=1e-5)  # magnitude 0: the grid does not move
    out = warp(image=img, mask=mask)
    assert out["image"].shape == img.shape and set(np.unique(out["mask"])) <= {0, 1}  # nearest: still binary
    assert not np.array_equal(out["mask"], mask)
    # the mask moved with the image: its pixels sit where the image kept the bright right-hand columns
    assert out["image"][..., 0][out["mask"] == 1].min() >= 4 * 38
    zoom = RandomZoom(scale=(1.1, 1.1), p=1)
    zoom.set_random_seed(2)
    zoomed = zoom(image=img, mask=mask)
    # a zoom by 1.1 at a place inside the image: no reflected border, the horizontal ramp gets 1.1x flatter
    assert np.diff(zoomed["image"][32, 8:56, 0].astype(int)).mean() == pytest.approx(4 / 1.1, rel=0.05)
    inside = zoomed["image"][..., 0][zoomed["mask"] == 1]
    assert inside.size and inside.min() >= 4 * 39  # the mask still covers the columns from 40 on, and only those


def test_one_case_configs_apply_table_4_1():
    for name in ("cascade_siim", "unet_resnet34_siim"):
        cfg = medrun.compose("train", [f"experiment={name}", "data.root=x"])
        steps = augmentations(cfg.data)
        assert [type(s).__name__ for s in steps] == ["HorizontalFlip", "Rotate", "RandomZoom", "SymmetricWarp",
                                                     "LogitBrightness", "LogitContrast"]
        assert [s.p for s in steps] == [0.5, 0.75, 0.75, 0.75, 0.75, 0.75]
        assert steps[1].limit == (-10, 10) and steps[2].scale == (1.0, 1.1) and steps[4].change == (0.4, 0.6)


def test_an_augmentation_schedule_changes_the_batches_from_its_epoch(tmp_path):
    from types import SimpleNamespace

    from medrun.data.batched import unsupported
    from medrun.data.build import build_splits, build_store
    from medrun.data.datamodule import FoldDataModule
    from medrun.training import build_trainer

    # an all-covering hole from epoch 1 on: the batches of epoch 0 keep their pixels, those of epoch 1 are black
    hole = {"_target_": "albumentations.CoarseDropout", "num_holes_range": [1, 1], "hole_height_range": [32, 32],
            "hole_width_range": [32, 32], "fill": 0, "p": 1.0}
    cfg = medrun.compose("train", ["data=synthetic", "data.count=8", "data.source_size=[32,32]",
                                   "data.image_size=[32,32]", "data.batch_size=8", "cv=holdout",
                                   f"+data.augment_schedule=[{{epoch: 1, augment: [{hole}]}}]".replace("'", "")])
    store = build_store(cfg)
    dm = FoldDataModule(store, build_splits(cfg, store)["folds"][0], cfg.data, seed=0)
    dm.trainer = SimpleNamespace(current_epoch=0, world_size=1)
    before = next(iter(dm.train_dataloader()))["image"]
    dm.trainer.current_epoch = 1
    after = next(iter(dm.train_dataloader()))["image"]
    assert before.std() > 0.05 and after.std() == 0  # one value everywhere: the hole's
    assert "augment_schedule" in unsupported(cfg.data)  # the batched path cannot follow it
    assert build_trainer(cfg, tmp_path, [], []).reload_dataloaders_every_n_epochs == 1
    bad = medrun.compose("train", ["data=synthetic", "+data.augment_schedule=[{epoch: -1, augment: []}]"])
    with pytest.raises(medrun.errors.MedrunError, match=r"data.augment_schedule\[0\] must be \{epoch: "):
        augmentations(bad.data)


def test_the_cascade_adds_cutout_after_70_epochs():
    cfg = medrun.compose("train", ["experiment=cascade_siim", "data.root=x"])
    assert [type(s).__name__ for s in augmentations(cfg.data, epoch=69)][-1] == "LogitContrast"
    late = augmentations(cfg.data, epoch=70)
    assert type(late[-1]).__name__ == "CoarseDropout" and late[-1].hole_height_range == (40, 40)
