"""The batched in-memory data path (#17): the same images, masks and normalisation as the per-sample
albumentations path on real ISBI and CVC files, masks moved with their images, and a clear choice of path."""
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import medrun
from medrun.data.batched import CachedBatches, augment_and_normalize, batch_augmentation
from medrun.data.store import TransformedSamples
from medrun.data.transforms import pipeline
from medrun.errors import MedrunError

FLIPS = "data.augment=[{_target_: albumentations.HorizontalFlip, p: 1.0}, {_target_: albumentations.VerticalFlip, p: 1.0}]"


def real(shared_data, name, folder, *extra):
    cfg = medrun.compose("train", [f"data={name}", f"data.root={shared_data}/{folder}", "data.image_size=[64,96]",
                                   *extra])
    store = medrun.api.build_store(cfg)
    return cfg, store


@pytest.mark.parametrize("name,folder", [("isbi2012", "isbi2012"), ("cvc_clinicdb", "cvc_clinicdb_sample/CVC-ClinicDB")])
@pytest.mark.parametrize("normalize", [[], ["~data.normalize", "+data.normalize={normalization: image}"],
                                       ["data.normalize={mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3], max_pixel_value: 255.0}"]])
def test_batched_path_equals_the_per_sample_path(shared_data, name, folder, normalize):
    extra = [FLIPS, *normalize]
    if normalize and "mean" in normalize[-1] and name == "isbi2012":
        extra.append("data.channels=3")
    cfg, store = real(shared_data, name, folder, *extra)
    indices = list(range(len(store)))
    per_sample = TransformedSamples(store, indices, pipeline(cfg.data, train=True), seed=0)
    want = [per_sample[i] for i in indices]
    batch = CachedBatches(store, indices).__getitems__(indices)
    got = augment_and_normalize(batch, batch_augmentation(cfg.data), cfg.data.normalize, True)
    assert torch.allclose(got["image"], torch.stack([w["image"] for w in want]), atol=1e-5, rtol=0)
    assert torch.equal(got["target"], torch.stack([w["target"] for w in want]))
    assert got["target"].dtype == torch.long and got["image"].dtype == torch.float32


def test_geometric_augmentations_move_masks_with_their_images(shared_data):
    augment = ("data.augment=[{_target_: albumentations.Rotate, limit: 30, p: 1.0}, "
               "{_target_: albumentations.Affine, scale: [0.8, 1.2], p: 1.0}]")
    cfg, store = real(shared_data, "cvc_clinicdb", "cvc_clinicdb_sample/CVC-ClinicDB", augment)
    indices = list(range(len(store)))
    batch = CachedBatches(store, indices).__getitems__(indices)
    batch["image"] = (batch["target"][:, None] * 255).repeat(1, 3, 1, 1).to(torch.uint8)  # the mask as an image
    before = batch["target"].long().clone()
    torch.manual_seed(0)
    out = augment_and_normalize(batch, batch_augmentation(cfg.data), OmegaConf.create({"mean": 0.0, "std": 1.0,
                                                                                       "max_pixel_value": 255.0}), True)
    moved_image = out["image"][:, 0] > 0.5
    agreement = (moved_image == out["target"].bool()).float().mean()
    assert agreement > 0.98 and not torch.equal(out["target"], before)  # moved, and together


def test_the_path_is_chosen_stated_and_forced(tiny, caplog):
    from medrun.data.batched import use_batched

    cfg = medrun.compose("train", tiny)
    store = medrun.api.build_store(cfg, preload=False)
    assert use_batched(cfg.data, store, "cuda") and not use_batched(cfg.data, store, "cpu")  # auto: on GPUs
    unsupported = medrun.compose("train", [*tiny, "data.augment=[{_target_: albumentations.GaussNoise, p: 0.5}]"])
    assert not use_batched(unsupported.data, store, "cuda")  # falls back to albumentations
    with pytest.raises(MedrunError, match="data.batched=true cannot be used: data.augment has albumentations.GaussNoise without a batched"):
        medrun.build_datamodule(medrun.compose("train", [*tiny, "data.batched=true",
                                                         "data.augment=[{_target_: albumentations.GaussNoise}]"]))
    assert not use_batched(medrun.compose("train", [*tiny, "data.batched=false"]).data, store, "cuda")
    with caplog.at_level(logging.INFO, logger="medrun"):
        medrun.train(medrun.compose("train", [*tiny, "cv=holdout", "data.batched=true", FLIPS.replace("1.0", "0.5")]))
    assert "data path: batched (uint8 flips, on the training device)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medrun"):
        medrun.train(medrun.compose("train", [*tiny, "cv=holdout"]))
    assert "data path: per-sample (albumentations)" in caplog.text


def test_batched_training_gives_the_per_sample_result(tiny):
    """Without augmentation both paths feed identical batches: the trained weights agree."""
    runs = [medrun.train(medrun.compose("train", [*tiny, "cv=holdout", "trainer.deterministic=true",
                                                  f"data.batched={b}"]))[1] for b in ("true", "false")]
    for k in runs[0]["mean"]:
        assert runs[0]["mean"][k] == pytest.approx(runs[1]["mean"][k], abs=1e-5)
    assert np.isfinite(list(runs[0]["mean"].values())).all()


def test_random_flips_differ_per_sample_and_move_each_mask_with_its_image(shared_data):
    cfg, store = real(shared_data, "isbi2012", "isbi2012", FLIPS.replace("1.0", "0.5"))
    indices = list(range(len(store)))
    cache = CachedBatches(store, indices)
    cached = cache.images.clone(), cache.targets.clone()
    batch = cache.__getitems__(indices)
    image, mask = batch["image"].float() / 255, batch["target"].long()
    torch.manual_seed(0)
    out = augment_and_normalize(batch, batch_augmentation(cfg.data),
                                OmegaConf.create({"mean": 0.0, "std": 1.0, "max_pixel_value": 255.0}), True)
    variants = {"none": (), "h": (-1,), "v": (-2,), "hv": (-2, -1)}
    seen = []
    for i in indices:
        name = next(n for n, dims in variants.items() if torch.equal(out["image"][i], image[i].flip(dims)))
        assert torch.equal(out["target"][i], mask[i].flip(variants[name]))  # the mask got the same flips
        seen.append(name)
    assert len(set(seen)) == 4  # each sample draws its own flips
    assert torch.equal(cache.images, cached[0]) and torch.equal(cache.targets, cached[1])  # flipped in the batch only


def test_min_max_normalisation_matches_albumentations_per_image():
    import albumentations as A
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from medrun.data.batched import normalize

    rng = np.random.default_rng(0)
    images = rng.integers(20, 200, size=(3, 8, 9, 3), dtype=np.uint8)
    spec = OmegaConf.create({"normalization": "min_max"})
    ours = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), spec)
    theirs = np.stack([A.Normalize(normalization="min_max")(image=i)["image"] for i in images]).transpose(0, 3, 1, 2)
    assert torch.allclose(ours, torch.from_numpy(theirs).float(), atol=1e-4)
    assert all(float(o.min()) == 0.0 and abs(float(o.max()) - 1) < 1e-4 for o in ours)


def test_hue_and_saturation_shifts_are_albumentations_on_both_paths(shared_data):
    """One real colour frame, fixed shifts: the batched (kornia) path changes hue, saturation and value as
    albumentations' HueSaturationValue does on the per-sample path (up to OpenCV's 8-bit HSV rounding)."""
    import albumentations as A

    cfg, store = real(shared_data, "cvc_clinicdb", "cvc_clinicdb_sample/CVC-ClinicDB")
    image = store.get(0)[0]  # uint8 RGB, as the per-sample path augments it
    spec = {"hue_shift_limit": (12, 12), "sat_shift_limit": (40, 40), "val_shift_limit": (-15, -15), "p": 1.0}
    want = A.HueSaturationValue(**spec)(image=image)["image"].astype(float)
    cfg.data.augment = [{"_target_": "albumentations.HueSaturationValue", **spec}]
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    got = batch_augmentation(cfg.data)(batch, torch.zeros(1, 1, *image.shape[:2]))[0]
    got = (got[0].permute(1, 2, 0).numpy() * 255).round()
    changed = np.abs(want - image).mean()
    assert changed > 10  # the shift is large: a wrong meaning (a factor, another hue unit) cannot pass below
    assert np.abs(got - want).mean() < 1.5 and np.percentile(np.abs(got - want), 99) <= 6
