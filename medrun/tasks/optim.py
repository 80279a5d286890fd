"""Optimizers and LR schedules by name, for any task's configure_optimizers."""
from __future__ import annotations

import itertools

import torch
from omegaconf import DictConfig, OmegaConf

from medrun.errors import MedrunError
from medrun.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer", "task.optimizer.name")
for _name, _cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD),
                    ("adadelta", torch.optim.Adadelta), ("radam", torch.optim.RAdam)):
    OPTIMIZERS.register(_name)(_cls)

# name -> (optimizer, settings, module) -> the lr_scheduler entry of configure_optimizers
SCHEDULERS: Registry = Registry("scheduler", "task.scheduler.name")


@SCHEDULERS.register("none")
def _none(opt, settings: dict, module):
    return None


@SCHEDULERS.register("plateau")
def _plateau(opt, settings: dict, module):
    monitor = settings.pop("monitor", None)
    return {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **settings), "monitor": monitor}


@SCHEDULERS.register("cosine")
def _cosine(opt, settings: dict, module):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, **settings)


@SCHEDULERS.register("multistep")
def _multistep(opt, settings: dict, module):
    return torch.optim.lr_scheduler.MultiStepLR(opt, **settings)


@SCHEDULERS.register("onecycle")
def _onecycle(opt, settings: dict, module):
    """One cycle over the run (or the stage's epochs); with `phases: [6, 12]` one full cycle per phase of that
    many epochs, as fastai's fit_one_cycle called once per phase (frozen, then unfrozen); `steps_per_epoch` when
    the scheduled network steps on fewer batches than the epoch has. A run cut shorter than
    the stage (trainer.max_epochs) shrinks every cycle in proportion, so each still completes."""
    settings.setdefault("max_lr", opt.defaults["lr"])
    # Lightning knows the epoch's length; a network stepping on a stream of its own says its own
    per_epoch = settings.pop("steps_per_epoch", None) or module.trainer.estimated_stepping_batches / module.trainer.max_epochs
    stage = settings.pop("stage_epochs", None)  # the cascade's stages train for fewer epochs than the run
    phases = settings.pop("phases", None)
    planned = int(stage or (sum(phases) if phases else module.trainer.max_epochs))
    phases = [int(p) for p in phases or [planned]]
    if sum(phases) != planned or min(phases) < 1 or (not stage and module.trainer.max_epochs > planned):
        raise MedrunError(f"onecycle.phases={phases} must be positive epoch counts adding up to the "
                          f"{stage or module.trainer.max_epochs} epochs it schedules")
    total = per_epoch * min(planned, module.trainer.max_epochs)
    cycles = [torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=max(1, round(total * p / planned)), **settings)
              for p in phases]
    if len(cycles) == 1:
        return {"scheduler": cycles[0], "interval": "step"}
    milestones = list(itertools.accumulate(c.total_steps for c in cycles[:-1]))
    return {"scheduler": torch.optim.lr_scheduler.SequentialLR(opt, cycles, milestones), "interval": "step"}


def build_optimization(module: torch.nn.Module, optimizer: DictConfig, scheduler: DictConfig | None, task=None):
    """Lightning's configure_optimizers value; only trainable parameters reach the optimizer. `task`: the
    LightningModule whose trainer a schedule reads, when `module` is one of its parts."""
    opt_cfg = OmegaConf.to_container(optimizer, resolve=True)
    name = opt_cfg.pop("name")
    params = [p for p in module.parameters() if p.requires_grad]
    opt = OPTIMIZERS.get(name)(params, **opt_cfg)
    name = (scheduler or {}).get("name") or "none"
    # Each schedule keeps its own settings under its name, so switching task.scheduler.name is enough.
    node = scheduler.get(name) if scheduler else None
    settings = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    entry = SCHEDULERS.get(name)(opt, settings, task or module)
    return opt if entry is None else {"optimizer": opt, "lr_scheduler": entry}


def apply_performance_options(module) -> None:
    """`performance.channels_last` and `performance.compile`; in-place, so checkpoint keys stay the same."""
    perf = module.cfg.get("performance") or {}
    if perf.get("channels_last"):
        module.net.to(memory_format=torch.channels_last)
    if perf.get("compile"):
        module.net.compile()


def manual_step(task, optimizer, loss: torch.Tensor, scheduler=None) -> torch.Tensor:
    """One step of manual optimisation (GANs, the cascade's two networks): zero_grad, Lightning's
    manual_backward (AMP scaling, DDP), the optimiser's step, then its per-step scheduler; returns the loss
    detached. Callers wrap the loss and the step in `task.toggled_optimizer(optimizer)` when other networks'
    parameters take part in the loss."""
    optimizer.zero_grad()
    task.manual_backward(loss)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()
