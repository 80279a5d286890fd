"""The post-processing decision: one object from the run's config, a stored eval, or a search, applied alike
to batches at the model's size (eval, held-out scoring) and to one image at its own size (predict)."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medrun.evaluation.decision import Decision


def config(**task):
    data = {"image_size": [8, 8], "classes": ["a", "b"], "mode": task.pop("mode", "multiclass")}
    return OmegaConf.create({"task": task, "data": data})


def test_a_runs_config_gives_its_defaults():
    seg = Decision.of_run(config(threshold=0.4))
    assert (seg.threshold, seg.min_area, seg.size, seg.decision_threshold) == (0.4, 0, (8, 8), None)
    cascade = Decision.of_run(config(threshold=0.5, decision_threshold=0.3))
    assert cascade.decision_threshold == 0.3
    # a classifier: argmax unless multi-label with task.thresholds; no mask size
    assert Decision.of_run(config(thresholds=None)) == Decision()
    multilabel = Decision.of_run(config(thresholds=[0.2, 0.7], mode="multilabel"))
    assert multilabel.threshold == (0.2, 0.7) and multilabel.size is None


def test_a_stored_decision_round_trips_over_the_runs_defaults():
    cfg = config(threshold=0.5, decision_threshold=0.5)
    searched = Decision.of_run(cfg, "flips").but(threshold=0.35, min_area=6, decision_threshold=0.65)
    assert Decision.read(searched.stored(), cfg) == searched
    # an older postprocessing.json without some keys keeps the run's values for them
    assert Decision.read({"threshold": 0.3}, cfg) == Decision.of_run(cfg).but(threshold=0.3)
    multilabel = config(thresholds=[0.2, 0.7], mode="multilabel")
    assert Decision.read({"threshold": [0.1, 0.9], "tta": "none"}, multilabel).threshold == (0.1, 0.9)


def test_masks_at_the_models_size_and_one_image_at_another_size_agree():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 8, 8, generator=g) ** 3
    classifier = torch.tensor([0.1, 0.9, 0.6, 0.2, 0.8, 0.55])
    decision = Decision(threshold=0.3, min_area=5, size=(8, 8), decision_threshold=0.5)
    masks = decision.masks(probs, classifier)
    expected = (probs >= 0.3) & (classifier >= 0.5)[:, None, None]
    expected[expected.flatten(1).sum(1) < 5] = False
    assert torch.equal(masks, expected) and masks.any() and not masks.all()
    for i in range(6):  # predict's path: the same image 4x larger (nearest), the same minimum area fraction
        big = np.kron(probs[i].numpy(), np.ones((4, 4), dtype=np.float32))
        assert np.array_equal(decision.mask(big, float(classifier[i])), np.kron(masks[i].numpy(), np.ones((4, 4))) > 0)


@pytest.mark.parametrize("multilabel, threshold, expected", [
    (False, None, [0, 1, 1]),        # argmax
    (False, 0.7, [0, 0, 1]),         # binary: p(class 1) >= the threshold
    (True, None, [[1, 0], [1, 1], [0, 1]]),          # 0.5 per label
    (True, (0.1, 0.9), [[1, 0], [1, 0], [1, 1]]),    # one threshold per label
])
def test_labels(multilabel, threshold, expected):
    probs = np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.95]])
    probs[1] = [0.5, 0.6] if multilabel else [0.45, 0.55]
    assert Decision(threshold=threshold).labels(probs, multilabel).tolist() == expected
