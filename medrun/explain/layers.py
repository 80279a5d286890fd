"""A layer of a network by name (the defaults come from the models: medrun.models.layers)."""
from __future__ import annotations

from torch import nn

from medrun.errors import MedrunError


def find_layer(net: nn.Module, name: str, key: str = "layer") -> nn.Module:
    """The module called `name`, or a one-line error listing the convolutional blocks one may name."""
    modules = dict(net.named_modules())
    if name in modules and name:
        return modules[name]
    convs = {n.rsplit(".", 1)[0] for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and "." in n}
    choices = sorted(convs, key=lambda n: (n.count("."), n))[:12]
    raise MedrunError(f"{key}={name!r} is not a module of this network; valid names include "
                      f"{', '.join(choices)} (any name from `medrun summary`)")
