"""Which layer of a network Grad-CAM looks at and which gives its bottleneck features. A network class that
knows says so with `cam_layer()` / `feature_layer()` (module names); other networks (timm classifiers) get
the generic answer below."""
from __future__ import annotations

from torch import nn


def last_module(module: nn.Module, kind) -> str:
    """The name of the last submodule of type `kind` ("" when none)."""
    names = [n for n, m in module.named_modules() if isinstance(m, kind)]
    return names[-1] if names else ""


def default_cam_layer(net: nn.Module) -> str:
    """The network's own choice, else a timm model's last feature stage, else its last convolution."""
    if hasattr(net, "cam_layer"):
        return net.cam_layer()
    info = getattr(net, "feature_info", None)
    if info is not None:
        return info[-1]["module"]
    return last_module(net, nn.Conv2d)


def default_feature_layer(net: nn.Module) -> str:
    """The network's own choice, else the input of its last linear layer (a classifier's pooled features)."""
    if hasattr(net, "feature_layer"):
        return net.feature_layer()
    return last_module(net, nn.Linear)
