"""Learning-rate schedules: one cycle per phase (fastai's fit_one_cycle per phase) runs each cycle to its end."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medrun.errors import MedrunError
from medrun.tasks.optim import build_optimization


def rates(phases, steps_per_epoch=10, epochs=18):
    net = torch.nn.Linear(2, 2)
    module = SimpleNamespace(trainer=SimpleNamespace(estimated_stepping_batches=steps_per_epoch * epochs,
                                                     max_epochs=epochs))
    entry = build_optimization(net, OmegaConf.create({"name": "adam", "lr": 1e-3}),
                               OmegaConf.create({"name": "onecycle", "onecycle": {"phases": phases}}), module)
    opt, scheduler = entry["optimizer"], entry["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(steps_per_epoch * epochs):  # Lightning steps a per-step schedule after each optimizer step
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(seen)


def test_one_cycle_per_phase_ends_each_cycle_at_its_final_rate():
    lrs = rates([6, 12])
    start, final = 1e-3 / 25, 1e-3 / 25 / 1e4  # OneCycleLR: max_lr / div_factor, then / final_div_factor
    assert lrs[0] == pytest.approx(start) and lrs[60] == pytest.approx(start)  # the second phase starts over
    assert lrs[59] == pytest.approx(final) and lrs[-1] == pytest.approx(final)  # each cycle completes
    assert lrs[:60].max() == pytest.approx(1e-3) and lrs[60:].max() == pytest.approx(1e-3)
    assert np.argmax(lrs[60:]) == pytest.approx(0.3 * 120, abs=1)  # each cycle's own warm-up share
    single = rates(None)
    assert single[0] == pytest.approx(start) and single[-1] == pytest.approx(final) and single[90] > single[150]
    short = rates([6, 12], epochs=9)  # a run cut to 9 epochs: both cycles shrink in proportion and still complete
    assert short[29] == pytest.approx(final) and short[30] == pytest.approx(start) and short[-1] == pytest.approx(final)
    with pytest.raises(MedrunError, match=r"onecycle.phases=\[6, 6\] must be positive epoch counts adding up to "
                                          "the 18 epochs"):
        rates([6, 6])
