"""Optimizers and LR schedules by name, for any task's configure_optimizers."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from medrun.errors import MedrunError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adadelta": torch.optim.Adadelta, "radam": torch.optim.RAdam}


def build_optimization(module: torch.nn.Module, optimizer: DictConfig, scheduler: DictConfig | None):
    """Lightning's configure_optimizers value; only trainable parameters reach the optimizer."""
    opt_cfg = OmegaConf.to_container(optimizer, resolve=True)
    name = opt_cfg.pop("name")
    if name not in OPTIMIZERS:
        raise MedrunError(f"unknown optimizer {name!r} (task.optimizer.name); valid: {', '.join(sorted(OPTIMIZERS))}")
    params = [p for p in module.parameters() if p.requires_grad]
    opt = OPTIMIZERS[name](params, **opt_cfg)
    if not scheduler or scheduler.get("name") in (None, "none"):
        return opt
    sname = scheduler.name
    if sname not in ("plateau", "cosine", "onecycle"):
        raise MedrunError(f"unknown scheduler {sname!r} (task.scheduler.name); valid: none, plateau, cosine, onecycle")
    # Each schedule keeps its own settings under its name, so switching task.scheduler.name is enough.
    node = scheduler.get(sname)
    sch = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    monitor = sch.pop("monitor", None)
    if sname == "plateau":
        return {"optimizer": opt, "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **sch), "monitor": monitor}}
    if sname == "cosine":
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, **sch)}
    sch.setdefault("max_lr", opt_cfg.get("lr", 1e-3))
    total = module.trainer.estimated_stepping_batches  # Lightning knows the run's length
    return {"optimizer": opt, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=int(total), **sch), "interval": "step"}}


def apply_performance_options(module) -> None:
    """`performance.channels_last` and `performance.compile`; in-place, so checkpoint keys stay the same."""
    perf = module.cfg.get("performance") or {}
    if perf.get("channels_last"):
        module.net.to(memory_format=torch.channels_last)
    if perf.get("compile"):
        module.net.compile()
