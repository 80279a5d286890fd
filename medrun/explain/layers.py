"""Which layer of a network Grad-CAM looks at, and which one gives its bottleneck features: a default per
architecture, any module by name on request."""
from __future__ import annotations

from torch import nn

from medrun.errors import MedrunError


def _last(module: nn.Module, kind) -> str:
    names = [n for n, m in module.named_modules() if isinstance(m, kind)]
    return names[-1] if names else ""


def default_cam_layer(net: nn.Module) -> str:
    """The last convolutional block: a classifier's last stage, a U-Net's last decoder block (so the map has
    the mask's resolution), the segmenter of a cascade."""
    from medrun.models.adversarial import AdversarialNet
    from medrun.models.cascade import CascadeNet
    from medrun.models.encoder_unet import EncoderUNet
    from medrun.models.sharp_unet import SharpUNet

    if isinstance(net, AdversarialNet):  # Corizzo et al.: Grad-CAM on the discriminator's last conv layer
        return "discriminator." + _last(net.discriminator, nn.Conv2d)
    if isinstance(net, CascadeNet):
        return "segmenter." + default_cam_layer(net.segmenter)
    if isinstance(net, SharpUNet):
        return f"decoder.{len(net.decoder) - 1}"
    if isinstance(net, EncoderUNet):
        return f"net.decoder.blocks.{len(net.net.decoder.blocks) - 1}"
    info = getattr(net, "feature_info", None)  # timm: its last feature stage
    if info is not None:
        return info[-1]["module"]
    return _last(net, nn.Conv2d)


def default_feature_layer(net: nn.Module) -> str:
    """The bottleneck: a U-Net encoder's last stage, a classifier's pooled features (the input of its last
    linear layer), an adversarial setup's generator bottleneck."""
    from medrun.models.adversarial import AdversarialNet
    from medrun.models.cascade import CascadeNet
    from medrun.models.encoder_unet import EncoderUNet
    from medrun.models.sharp_unet import SharpUNet

    if isinstance(net, AdversarialNet):  # the generator's 1024-channel bottleneck
        return "generator." + default_feature_layer(net.generator)
    if isinstance(net, CascadeNet):
        return "segmenter." + default_feature_layer(net.segmenter)
    if isinstance(net, SharpUNet):
        return f"encoder.{len(net.encoder) - 1}"
    if isinstance(net, EncoderUNet):
        return "net.encoder"  # its output is the list of stages: the last is taken
    return _last(net, nn.Linear)


def find_layer(net: nn.Module, name: str, key: str = "layer") -> nn.Module:
    """The module called `name`, or a one-line error listing the convolutional blocks one may name."""
    modules = dict(net.named_modules())
    if name in modules and name:
        return modules[name]
    convs = {n.rsplit(".", 1)[0] for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and "." in n}
    choices = sorted(convs, key=lambda n: (n.count("."), n))[:12]
    raise MedrunError(f"{key}={name!r} is not a module of this network; valid names include "
                      f"{', '.join(choices)} (any name from `medrun summary`)")
