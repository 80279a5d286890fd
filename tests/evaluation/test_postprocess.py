"""Post-processing rules: the cascade's blanking and the SIIM-ACR triplet, and their searches against brute force."""
import pytest
import torch

from medrun.evaluation.decision import Decision
from medrun.evaluation.postprocess import apply_triplet, search_cascade, search_triplet


def test_blanking_and_triplet_rules():
    seg = torch.zeros(3, 8, 8)
    seg[:, 2:6, 2:6] = 0.9
    seg[2, 0, 0] = 0.95  # a one-pixel speck
    cls = torch.tensor([0.2, 0.8, 0.8])
    masks = Decision(threshold=0.5, decision_threshold=0.5).masks(seg, cls)
    assert masks[0].sum() == 0 and masks[1].sum() == 16 and masks[2].sum() == 17
    assert Decision(threshold=0.5, decision_threshold=0.5, min_area=17).masks(seg, cls)[1].sum() == 0  # too small
    triplet = apply_triplet(seg, top=0.92, area=1, bottom=0.5, min_component=2)
    assert triplet[0].sum() == 0 and triplet[1].sum() == 0  # no pixel above top: empty
    assert triplet[2].sum() == 16  # drawn at bottom, without the one-pixel component


def test_cascade_search_matches_brute_force_and_triplet_search_finds_the_rule():
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(12, 16, 16, dtype=torch.long)
    target[6:, 4:10, 4:10] = 1  # half the images empty
    seg = (target * 0.6 + torch.rand(12, 16, 16, generator=g) * 0.45).clamp(0, 1)
    seg[:6, 1:9, 1:9] = 0.95  # confident false lesions, larger than any min area: only the classifier blanks them
    cls = torch.cat([torch.rand(6, generator=g) * 0.4, 0.6 + torch.rand(6, generator=g) * 0.4])
    cls[3] = cls[7] = 0.5  # tied scores at a decision threshold
    found = search_cascade(seg, cls, target, decisions=[0.3, 0.5, 0.7], min_areas=(0, 20, 40), bins=20)

    def dice(masks):
        tp = (masks & target.bool()).flatten(1).sum(1).float()
        den = masks.flatten(1).sum(1) + target.flatten(1).sum(1)
        return torch.where(den > 0, 2 * tp / den.clamp(min=1), torch.ones_like(tp)).mean().item()

    def apply(d, t, a):
        return Decision(threshold=t, min_area=a, decision_threshold=d).masks(seg, cls)

    brute = max((dice(apply(d, t / 20, a)), d, t / 20, a)
                for d in (0.3, 0.5, 0.7) for a in (0, 20, 40) for t in range(1, 20))
    assert found["dice"] == pytest.approx(brute[0], abs=1e-6) and found["dice"] > 0.9
    chosen = apply(found["decision_threshold"], found["threshold"], found["min_area"])
    assert dice(chosen) == pytest.approx(found["dice"], abs=1e-6)
    assert found["decision_threshold"] >= 0.5  # the classifier separates: negatives are blanked
    best = search_triplet(seg, target, tops=(0.5, 0.9), areas=(0, 100_000), bottoms=(0.5,), min_components=(0,))
    assert best["dice"] >= dice(apply_triplet(seg, 0.5, 0, 0.5, 0)) - 1e-6
