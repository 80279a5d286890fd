import math

import pytest
import torch

from medrun.evaluation.metrics import SegmentationScores, confusion, scores


def binary(pred, target):
    probs = torch.tensor(pred, dtype=torch.float32)[:, None]
    tp, fp, fn, tn = confusion(probs, torch.tensor(target), binary=True)
    return scores(tp, fp, fn, tn, ["background", "fg"])


def test_binary_scores_match_hand_computed_values():
    # image 0: tp=2, fp=1, fn=1, tn=0 -> dice 4/6, iou 2/4; image 1: perfect on 1 pixel.
    pred = [[[1, 1], [1, 0]], [[0, 0], [0, 1]]]
    target = [[[1, 1], [0, 1]], [[0, 0], [0, 1]]]
    s = binary(pred, target)
    assert s["dice"] == pytest.approx((4 / 6 + 1) / 2)
    assert s["jaccard"] == pytest.approx((2 / 4 + 1) / 2)
    # micro: tp=3, fp=1, fn=1 over the dataset
    assert s["dice_micro"] == pytest.approx(6 / 8)
    assert s["jaccard_micro"] == pytest.approx(3 / 5)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 4)
    assert s["specificity"] == pytest.approx(3 / 4)  # tn=0+3, fp=1


def test_empty_mask_policy():
    empty_both = binary([[[0, 0], [0, 0]]], [[[0, 0], [0, 0]]])
    assert empty_both["dice"] == 1.0 and empty_both["jaccard"] == 1.0
    false_alarm = binary([[[1, 0], [0, 0]]], [[[0, 0], [0, 0]]])
    assert false_alarm["dice"] == 0.0 and false_alarm["jaccard"] == 0.0
    missed = binary([[[0, 0], [0, 0]]], [[[1, 0], [0, 0]]])
    assert missed["dice"] == 0.0
    assert all(not math.isnan(v) for s in (empty_both, false_alarm, missed) for v in s.values())


def test_empty_score_is_configurable():
    probs, target = torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    tp, fp, fn, tn = confusion(probs, target, binary=True)
    assert scores(tp, fp, fn, tn, ["bg", "fg"], empty_score=0.0)["dice"] == 0.0


def test_multiclass_means_run_over_foreground_classes():
    target = torch.tensor([[[0, 1], [2, 2]]])
    pred = torch.tensor([[[0, 1], [2, 1]]])
    probs = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    s = scores(*confusion(probs, target, binary=False), ["bg", "ggo", "cons"])
    # class 1: tp=1 fp=1 fn=0 -> dice 2/3; class 2: tp=1 fp=0 fn=1 -> dice 2/3
    assert s["dice_ggo"] == pytest.approx(2 / 3) and s["dice_cons"] == pytest.approx(2 / 3)
    assert s["dice"] == pytest.approx(2 / 3)
    assert s["jaccard"] == pytest.approx(0.5)


def test_epoch_metric_accumulates_batches():
    m = SegmentationScores(["bg", "fg"])
    # batch 1: a perfect image (Dice 1); batch 2: half the lesion found (Dice 2*1/(2+1) = 2/3)
    m.update(torch.tensor([[[[0.9, 0.1, 0.1]]]]), torch.tensor([[[1, 0, 0]]]))
    m.update(torch.tensor([[[[0.9, 0.2, 0.1]]]]), torch.tensor([[[1, 1, 0]]]))
    out = m.compute()
    assert out["dice"] == pytest.approx((1 + 2 / 3) / 2)  # mean over both images, not the last batch
    assert out["dice_micro"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))  # tp 2, fp 0, fn 1 over the epoch


def real_masks(shared_data, size=(128, 128)):
    """ISBI-2012 labels and CVC-ClinicDB ground truths as (N, H, W) class indices, with soft predictions."""
    import medrun

    stores = [medrun.api.build_store(medrun.compose("train", [f"data={name}", f"data.root={shared_data}/{folder}",
                                                              f"data.image_size=[{size[0]},{size[1]}]"]), preload=False)
              for name, folder in (("isbi2012", "isbi2012"), ("cvc_clinicdb", "cvc_clinicdb_sample/CVC-ClinicDB"))]
    masks = torch.stack([torch.as_tensor(s.get(i)[1]).long() for s in stores for i in range(len(s))])
    g = torch.Generator().manual_seed(0)
    probs = (masks.float() * 0.6 + torch.rand(masks.shape, generator=g) * 0.5).clamp(0, 1)
    return masks, probs


def test_vectorised_counts_equal_smp_on_real_masks(shared_data):
    import segmentation_models_pytorch as smp

    masks, probs = real_masks(shared_data)
    assert len(masks) == 42 and 0 < masks.float().mean() < 1
    for t in (0.3, 0.5, 0.8):
        ours = confusion(probs[:, None], masks, True, t)
        theirs = smp.metrics.get_stats(probs[:, None], masks[:, None], mode="binary", threshold=t)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        assert all(torch.equal(a, b) for a, b in zip(confusion(probs[:, None], masks.bool(), True, t), theirs))
    three = torch.stack([1 - probs, probs * 0.5, probs * 0.5 + (masks == 0) * 0.01], 1)
    classes = masks * 2  # classes 0 and 2 present, 1 absent
    ours = confusion(three, classes, False)
    theirs = smp.metrics.get_stats(three.argmax(1), classes, mode="multiclass", num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # and the scores from them, against smp's own reductions
    tp, fp, fn, tn = confusion(probs[:, None], masks, True)
    got = scores(tp, fp, fn, tn, ["bg", "fg"])
    want = smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise", zero_division=1.0)
    assert abs(got["dice"] - float(want)) < 1e-6


def test_search_counts_equal_counting_at_each_threshold(shared_data):
    from medrun.evaluation.thresholds import pixel_counts

    masks, probs = real_masks(shared_data)
    tp, fp, n_fg = pixel_counts(probs, masks, bins=20)
    assert all(torch.equal(a, b) for a, b in zip(pixel_counts(probs, masks.bool(), bins=20), (tp, fp, n_fg)))
    for i in (1, 7, 13):
        c = confusion(probs[:, None], masks, True, i / 20)
        assert torch.equal(tp[:, i], c[0][:, 0]) and torch.equal(fp[:, i], c[1][:, 0])
    assert torch.equal(n_fg, masks.flatten(1).sum(1))


def test_collected_masks_are_compacted_only_when_every_class_fits():
    from medrun.evaluation.metrics import compact

    masks = torch.tensor([[[0, 1], [2, 255]]])
    assert compact(masks).dtype == torch.uint8 and torch.equal(compact(masks).long(), masks)
    for kept in (masks * 2, masks - 1, torch.tensor([0, 1, 2]), torch.rand(2, 3, 3)):  # 510, -1, labels, floats
        assert compact(kept) is kept


def test_paper_definitions_against_hand_computed_values():
    # image 0: fg tp=2 fp=1 fn=1 tn=0 -> fg IoU 1/2, Dice 2/3; background tp=0 fp=1 fn=1 -> IoU 0, Dice 0
    # image 1: perfect, both classes present -> 1 everywhere
    s = binary([[[1, 1], [1, 0]], [[0, 0], [0, 1]]], [[[1, 1], [0, 1]], [[0, 0], [0, 1]]])
    assert s["jaccard"] == pytest.approx(0.75)                                   # medrun: foreground per image
    assert s["jaccard_with_background"] == pytest.approx(((0 + 0.5) / 2 + 1) / 2)  # the text: background counts
    assert s["dice_with_background"] == pytest.approx(((0 + 2 / 3) / 2 + 1) / 2)
    assert s["jaccard_pooled_channels"] == pytest.approx(s["jaccard"])         # binary reference code = foreground
    assert s["intersection_ratio_positive"] == pytest.approx((2 / 3 + 1) / 2)   # |P and T| / |T| over positives
    # pooled over the dataset (One Case's "Dice" and "IoU"): tp 3, fp 1, fn 1, and IoU = D / (2 - D)
    assert s["jaccard_micro"] == pytest.approx(s["dice_micro"] / (2 - s["dice_micro"]))
    # an image without foreground does not enter the intersection ratio; with none at all it takes empty_score
    s = binary([[[1, 0], [0, 0]], [[1, 1], [0, 0]]], [[[0, 0], [0, 0]], [[1, 0], [0, 0]]])
    assert s["intersection_ratio_positive"] == pytest.approx(1.0) and s["dice"] == pytest.approx((0 + 2 / 3) / 2)
    assert binary([[[0, 0]]], [[[0, 0]]])["intersection_ratio_positive"] == 1.0


def test_multiclass_paper_definitions_count_the_background():
    target = torch.tensor([[[0, 1], [2, 2]]])
    pred = torch.tensor([[[0, 1], [2, 1]]])
    probs = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    s = scores(*confusion(probs, target, binary=False), ["bg", "ggo", "cons"])
    # IoU per class: background 1, ggo 1/2, cons 1/2 -> medrun (foreground) 1/2, the text's mean 2/3
    assert s["jaccard"] == pytest.approx(0.5)
    assert s["jaccard_with_background"] == pytest.approx(2 / 3)
    # reference notebooks: every channel's pixels pooled, tp 3, fp 1, fn 1
    assert s["jaccard_pooled_channels"] == pytest.approx(3 / 5)
    assert s["dice_pooled_channels"] == pytest.approx(6 / 8)
    assert "intersection_ratio_positive" not in s


def test_all_empty_reference_row_scores_k_over_n_per_image_and_nothing_pooled():
    from medrun.evaluation.reports import not_beaten, trivial_markdown
    from medrun.evaluation.trivial import segmentation_baselines

    n, k = 7, 4  # k of n masks empty
    target = torch.zeros(n, 4, 4, dtype=torch.long)
    for i in range(k, n):
        target[i, : i - 2, :2] = 1
    rows = segmentation_baselines(target, ["bg", "lesion"])
    assert rows["all-empty"]["dice"] == pytest.approx(k / n) and rows["all-empty"]["dice_micro"] == 0.0
    assert rows["all-foreground"]["recall"] == 1.0 and rows["all-foreground"]["dice"] < 1
    # a method scoring below the all-empty row on Dice per image is said not to beat it
    summary = {"folds": [{"fold": 0, "metrics": {"dice": 0.5, "dice_micro": 0.3}}],
               "mean": {"dice": 0.5, "dice_micro": 0.3}, "std": {"dice": 0.0, "dice_micro": 0.0},
               "trivial": {name: {"mean": r, "std": {m: 0.0 for m in r}} for name, r in rows.items()}}
    assert not_beaten(summary) == [("dice", "all-empty", pytest.approx(k / n), 0.5)]
    assert "does not beat the trivial row on **dice**: all-empty 0.5714 vs 0.5000" in trivial_markdown(summary)
    three = segmentation_baselines(torch.tensor([[[0, 1], [2, 2]]]), ["bg", "a", "b"])
    assert set(three) == {"all-empty", "all-class-1", "all-class-2"}


def test_a_dataset_level_ratio_with_nothing_to_count_is_left_out_not_scored_one():
    target = torch.zeros(3, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1
    nothing = torch.zeros(3, 1, 4, 4)  # a model that marks no pixel
    s = scores(*confusion(nothing, target, True), ["bg", "lesion"])
    assert "precision" not in s and s["recall"] == 0 and s["specificity"] == 1
    assert s["dice"] == pytest.approx(2 / 3)  # two empty-on-empty images score 1, the missed lesion 0
    empty = scores(*confusion(nothing, torch.zeros_like(target), True), ["bg", "lesion"])
    assert "recall" not in empty and "precision" not in empty and empty["dice_micro"] == 1.0
