"""Composition of the packaged configs: wrong names and keys fail in one line that says what to pass."""

import pytest
from omegaconf import OmegaConf

import medrun
from medrun.errors import MedrunError


def test_unknown_experiment_lists_valid_ones():
    with pytest.raises(MedrunError, match=r"unknown experiment 'nope'; valid: .*sharp_unet_cvc"):
        medrun.compose("train", ["experiment=nope"])


@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epoch=1", "trainer.max_epoch is not a setting: did you mean trainer.max_epochs? "
                            "(+trainer.max_epoch=... passes it on to the library as it is)"),
    ("model.filtres=3", "model.filtres is not a setting: did you mean model.filters?"),
    ("task.optimzer.lr=1", "task.optimzer is not a setting: did you mean task.optimizer?"),
    # a key of another option of the same group: say which options have it instead of a near name (cv.fold)
    ("cv.folds=2", "cv.folds is not a setting of the chosen cv; cv=kfold, cv=repeated_kfold have it"),
    ("nonsense=1", "nonsense is not a setting (the config has: paths, data, model,"),
])
def test_unknown_key_says_what_was_meant(override, expected):
    with pytest.raises(MedrunError) as e:
        medrun.compose("train", ["experiment=quickstart", override])
    assert str(e.value).startswith("bad override: ") and expected in str(e.value)


@pytest.mark.parametrize("override,expected", [
    # Hydra's advice for cv.folds on a holdout protocol is +cv.folds=2, which would run a holdout regardless
    ("+cv.folds=2", "bad override +cv.folds=2: nothing reads it; cv.folds is not a setting of the chosen cv; "
                    "cv=kfold, cv=repeated_kfold have it"),
    ("+model.foo=1", "bad override +model.foo=1: nothing reads it; model.foo is not a setting (model has: name, "
                     "filters, sharp)"),
    ("+callbacks.early_stopping.min_delta=0.1", "callbacks.early_stopping.min_delta is not a setting "
                                                "(callbacks.early_stopping has: enabled, monitor, mode, patience)"),
])
def test_an_added_key_that_nothing_reads_is_refused(override, expected):
    with pytest.raises(MedrunError) as e:
        medrun.compose("train", ["experiment=quickstart", override])
    assert expected in str(e.value)


def test_added_keys_that_are_read_still_compose():
    cfg = medrun.compose("train", ["experiment=quickstart", "+trainer.limit_train_batches=2",  # Trainer kwargs
                                   "+task.optimizer.weight_decay=0.1", "~data.normalize",
                                   "+data.normalize={normalization: image}", "++oversample.epochs=5"])
    assert cfg.trainer.limit_train_batches == 2 and cfg.task.optimizer.weight_decay == 0.1
    assert cfg.data.normalize.normalization == "image" and cfg.oversample.epochs == 5
    # a key the chosen option declares as null takes + as Hydra allows
    assert medrun.compose("train", ["experiment=sharp_unet_isbi", "+cv.contiguous=false"]).cv.contiguous is False


@pytest.mark.parametrize("experiment,key,value", [
    ("quickstart", "task.table", True), ("quickstart", "task.min_areas", [0, 64]), ("quickstart", "task.tta", "d4"),
    ("quickstart_cls", "task.threshold", 0.3)])
def test_settings_the_tasks_read_are_declared(experiment, key, value):
    """A setting the code reads with a default must be declared, so a plain key=value reaches it."""
    cfg = medrun.compose("train", [f"experiment={experiment}", f"{key}={value}"])
    assert OmegaConf.to_object(cfg)["task"][key.split(".")[1]] == value


def test_every_option_says_what_it_is():
    """`medrun list GROUP` shows each option's first comment sentence: a new config must carry one."""
    from medrun.config import describe, groups, options

    missing = [f"{g}/{o}" for g in groups() for o in options(g) if not describe(g, o)]
    assert missing == []
    assert describe("experiment", "melanet_isic2016").startswith("MelaNet (Zunair's thesis, ch. 2): inside each fold")
    assert len(describe("experiment", "cascade_busi")) <= 110 and describe("experiment", "cascade_busi").endswith("...")
