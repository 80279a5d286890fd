"""Test-time augmentation: each view mapped back onto the input grid, classifiers' scores averaged as they are."""
import pytest
import torch

from medrun.evaluation.tta import TTA, tta_probabilities


@pytest.mark.parametrize("mode", list(TTA))
def test_tta_of_an_identity_model_returns_its_input_exactly(mode):
    x = torch.rand(2, 3, 32, 48)
    assert torch.equal(tta_probabilities(lambda v: v, x, mode, spatial=True), x)
    # a classifier's scores are averaged as they are: a view-invariant score is unchanged
    score = lambda v: v.mean(dim=(-2, -1))  # noqa: E731
    assert torch.allclose(tta_probabilities(score, x, mode, spatial=False), score(x))


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_maps_each_view_back_onto_the_input_grid(mode):
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)  # asymmetric, non-square
    x = x[..., :4] if mode == "d4" else x  # rotations by 90 degrees need a square image
    # A model that marks its input's top-left pixel: mapped back, each view marks a different corner,
    # so the mean has 1/len(views) on the corners the views' top-left pixels came from.
    def top_left(v):
        out = torch.zeros_like(v)
        out[..., 0, 0] = 1
        return out

    out = tta_probabilities(top_left, x, mode, spatial=True)
    h, w = out.shape[-2:]
    corners = {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)}
    views = len(TTA[mode])
    for r, c in corners:
        assert out[0, 0, r, c] == pytest.approx(1 / 4 if mode == "flips" else 2 / views)
    assert out.sum() == pytest.approx(2.0)  # one unit of mass per image, all on the corners
    # an equivariant model (pixel-wise) gives back exactly its own output: each inverse undoes its view
    assert torch.allclose(tta_probabilities(torch.sigmoid, x, mode, spatial=True), torch.sigmoid(x))
