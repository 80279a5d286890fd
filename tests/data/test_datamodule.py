"""The fold's datamodule: loaders of each part, and no training batch of one sample."""
import json

import pytest

import medrun
from medrun.api import build_store
from medrun.data.datamodule import FoldDataModule


@pytest.mark.parametrize("batched", [False, True])
def test_a_lone_last_training_sample_is_dropped_and_never_a_scored_one(batched):
    cfg = medrun.compose("train", ["experiment=quickstart_cls", "data.count=24", "data.image_size=[32,32]",
                                   "data.batch_size=4"])
    store = build_store(cfg, preload=False)
    ids = [s.id for s in store.samples]
    sizes = {}
    for n in (9, 10):
        dm = FoldDataModule(store, {"train": ids[:n], "val": ids[n:n + 9], "test": ids[:9]}, cfg.data, 0, batched)
        sizes[n] = [len(b["image"]) for b in dm.train_dataloader()]
        assert [len(b["image"]) for b in dm.val_dataloader()] == [4, 4, 1]  # every validation sample scored
        assert sum(len(b["image"]) for b in dm.test_dataloader()) == 9
    assert sizes == {9: [4, 4], 10: [4, 4, 2]}


def test_densenet_at_32_pixels_trains_when_a_batch_of_one_would_remain(tmp_path):
    # 32x32 leaves DenseNet's last batch norm a 1x1 map: a batch of one sample failed with a bare traceback
    cfg = medrun.compose("train", ["experiment=quickstart_cls", "data.count=24", "data.image_size=[32,32]",
                                   "data.batch_size=4", "cv=kfold", "cv.folds=2", "trainer.max_epochs=1",
                                   "logger=none", "callbacks.progress=none", f"paths.output_dir={tmp_path}"])
    run_dir, summary = medrun.train(cfg)
    folds = json.loads((run_dir / "splits.json").read_text())["folds"]
    assert [len(f["train"]) % 4 for f in folds] == [1, 1] and 0 <= summary["mean"]["accuracy"] <= 1
