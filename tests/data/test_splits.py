"""Split invariants of the protocols, on real files."""
import json

import pytest

import medrun
from medrun.api import build_splits, build_store
from medrun.data.splits import load_splits
from medrun.errors import MedrunError


def splits(*overrides):
    cfg = medrun.compose("train", list(overrides))
    st = build_store(cfg, preload=False)
    return build_splits(cfg, st), st


def test_kfold_holds_out_every_sample_once(shared_data):
    sp, st = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012")
    assert sp["protocol"] == "kfold" and not sp["test_used_for_model_selection"]
    held = [i for f in sp["folds"] for i in f["test"]]
    assert len(sp["folds"]) == 5 and sorted(held) == sorted(s.id for s in st.samples)
    for f in sp["folds"]:
        train, val, test = map(set, (f["train"], f["val"], f["test"]))
        assert not (train & val or train & test or val & test)
        assert len(train | val | test) == 30


def test_grouped_kfold_keeps_video_sequences_together(shared_data):
    sp, st = splits("experiment=sharp_unet_cvc", f"data.root={shared_data}/cvc_clinicdb_sample/CVC-ClinicDB",
                    "cv.folds=2")
    group = {s.id: s.group for s in st.samples}
    for f in sp["folds"]:
        test_groups = {group[i] for i in f["test"]}
        assert not test_groups & {group[i] for i in f["train"] + f["val"]}


def test_repeated_holdout_is_the_papers_leaky_protocol(shared_data):
    sp, _ = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", "cv=repeated_holdout")
    assert sp["test_used_for_model_selection"] and len(sp["folds"]) == 5
    first = sp["folds"][0]
    assert first["val"] == first["test"] and len(first["test"]) == 6
    assert all(f["train"] == first["train"] and f["test"] == first["test"] for f in sp["folds"])
    # The split depends on cv.split_seed (42, as published), not on the run seed.
    sp2, _ = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", "cv=repeated_holdout", "seed=7")
    assert sp2["folds"][0]["test"] == first["test"]


def test_holdout_uses_the_fixed_test_set(shared_data):
    sp, _ = splits("experiment=sharp_unet_covid_ct", f"data.root={shared_data}/covid19_ct_seg", "cv=holdout")
    (fold,) = sp["folds"]
    assert len(fold["test"]) == 48 and all(i.startswith("test_") for i in fold["test"])
    assert all(i.startswith("train_") for i in fold["train"] + fold["val"])
    kf, _ = splits("experiment=sharp_unet_covid_ct", f"data.root={shared_data}/covid19_ct_seg")
    assert len(kf["fixed_test"]) == 48
    assert not any(i.startswith("test_") for f in kf["folds"] for i in f["test"] + f["train"])
    # a fraction the fixed set would silently replace is refused; with use_fixed_test=false it is the split
    with pytest.raises(MedrunError, match=r"cv.test_fraction=0.3 has no effect: the data has a fixed test set"):
        splits("experiment=sharp_unet_covid_ct", f"data.root={shared_data}/covid19_ct_seg", "cv=holdout",
               "cv.test_fraction=0.3")
    own, _ = splits("experiment=sharp_unet_covid_ct", f"data.root={shared_data}/covid19_ct_seg", "cv=holdout",
                    "cv.test_fraction=0.3", "cv.use_fixed_test=false")
    assert len(own["folds"][0]["test"]) == 15  # 30 % of the 50 training images


def test_medmnist_fixed_validation_set_and_a_fraction_for_it(shared_data):
    with pytest.raises(MedrunError, match=r"cv.val_fraction=0.3 has no effect: the data has a fixed val set"):
        splits("experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist", "cv.val_fraction=0.3")


def test_splits_file_is_reused_and_checked(shared_data, tmp_path):
    sp, st = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012")
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(sp))
    again, _ = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", f"cv.splits_file={path}",
                      "seed=3")
    assert again["folds"] == sp["folds"]
    sp["folds"][0]["test"].append("not-a-sample")
    path.write_text(json.dumps(sp))
    with pytest.raises(MedrunError, match="names samples not in the dataset"):
        load_splits(path, st.samples)
    # a fold whose test ids also train (or validate) is refused, naming them
    sp["folds"][0]["test"].pop()
    sp["folds"][0]["train"].append(sp["folds"][0]["test"][0])
    path.write_text(json.dumps(sp))
    first = sp["folds"][0]["test"][0]
    with pytest.raises(MedrunError, match=rf"fold 0 has 1 test sample\(s\) in its train part, e.g. \['{first}'\]"):
        load_splits(path, st.samples)
    sp["folds"][0]["train"].pop()
    sp["folds"][0]["train"].append(sp["folds"][0]["val"][0])  # a validation id that also trains
    path.write_text(json.dumps(sp))
    both = sp["folds"][0]["val"][0]
    with pytest.raises(MedrunError, match=rf"fold 0 has 1 sample\(s\) in both its train and val parts, e.g. \['{both}'\]"):
        load_splits(path, st.samples)
    leaky, _ = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", "cv=repeated_holdout")
    path.write_text(json.dumps(leaky))
    assert load_splits(path, st.samples)["folds"] == leaky["folds"]  # a declared leak (val = test) loads
    with pytest.raises(MedrunError, match=r"cv.folds=3 has no effect: the folds come from cv.splits_file="):
        splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", f"cv.splits_file={path}",
               "cv.folds=3")


def test_repeated_kfold_is_the_texts_protocol_with_new_splits_per_repeat(shared_data):
    sp, st = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012", "cv=repeated_kfold")
    assert sp["protocol"] == "repeated_kfold" and not sp["test_used_for_model_selection"]
    assert len(sp["folds"]) == 25 and [f["repeat"] for f in sp["folds"]] == [r for r in range(5) for _ in range(5)]
    ids = sorted(s.id for s in st.samples)
    tests_of = {}
    for r in range(5):
        folds = [f for f in sp["folds"] if f["repeat"] == r]
        assert sorted(i for f in folds for i in f["test"]) == ids  # each repeat is a full 5-fold CV
        for f in folds:
            assert not set(f["val"]) & set(f["test"]) and not set(f["train"]) & set(f["test"])
        tests_of[r] = {frozenset(f["test"]) for f in folds}
    assert len({frozenset(t) for t in tests_of.values()}) == 5  # different splits in every repeat
    # ISBI's slices stay in contiguous blocks (as in cv=kfold), shifted per repeat
    order = {s.id: k for k, s in enumerate(st.samples)}
    for f in sp["folds"]:
        pos = sorted(order[i] for i in f["test"])
        gaps = [b - a for a, b in zip(pos, pos[1:])]
        assert sum(g != 1 for g in gaps) <= 1  # one block, possibly wrapping round the end
    plain, _ = splits("experiment=sharp_unet_isbi", f"data.root={shared_data}/isbi2012")
    assert [f["test"] for f in sp["folds"][:5]] == [f["test"] for f in plain["folds"]]  # repeat 0 = cv=kfold


def test_summary_spread_over_repeats():
    from medrun.evaluation.reports import aggregate

    folds = [{"fold": k, "repeat": k // 2, "metrics": {"dice": v}} for k, v in enumerate([0.2, 0.4, 0.6, 0.8])]
    out = aggregate("x", "repeated_kfold", folds)
    assert out["mean"]["dice"] == pytest.approx(0.5)
    assert out["over_repeats"]["n"] == 2 and out["over_repeats"]["mean"]["dice"] == pytest.approx(0.5)
    assert out["over_repeats"]["std"]["dice"] == pytest.approx(((0.3 - 0.5) ** 2 + (0.7 - 0.5) ** 2) ** 0.5)
    assert "over_repeats" not in aggregate("x", "repeated_holdout", [{**f, "repeat": f["fold"]} for f in folds])
