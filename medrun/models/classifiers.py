"""Classification networks: any timm backbone (DenseNet121, ResNeXt50, ...), VGG-GAP (MelaNet) and
FF-VGG19 (feature-fusion VGG19). Pretrained weights: a local file, or the library's cache (medrun.models.pretrained)."""
from __future__ import annotations

import timm
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from medrun.errors import MedrunError
from medrun.models.pretrained import Weights, only_imagenet, pretrained_state, timm_name

VGG_CONFIGS = {"vgg16": "D", "vgg19": "E"}  # torchvision's names of the layer lists


def timm_classifier(backbone: str, in_channels: int, num_classes: int, pretrained=None, weights_path=None,
                    drop_rate: float = 0.0) -> nn.Module:
    """timm model with global average pooling and a linear head of `num_classes` outputs."""
    if backbone not in timm.list_models():
        raise MedrunError(f"model.backbone={backbone!r} is not a timm model; see timm.list_models('*name*')")
    kw = dict(num_classes=num_classes, in_chans=in_channels, drop_rate=drop_rate)
    wanted = Weights("timm", timm_name(backbone, pretrained), "model.pretrained") if pretrained else None
    state = pretrained_state(weights_path, wanted, "model.weights_path")
    if state is None:
        return timm.create_model(backbone, pretrained=False, **kw)
    # timm adapts the stem to in_chans and drops a classifier of the wrong size; the state_dict was read by medrun
    # (safetensors or weights_only=True), so timm itself fetches and unpickles nothing
    try:
        return timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kw)
    except RuntimeError as e:
        raise MedrunError(f"{'model.weights_path=' + str(weights_path) if weights_path else wanted.name} does not fit "
                          f"{backbone}: {' '.join(str(e).splitlines()[:2])[:300]}") from None


def vgg_features(arch: str, batch_norm: bool = False, state: dict | None = None, key: str = "model.weights_path"):
    """torchvision's `vgg16` / `vgg19` convolutional part (`.features`, same layers and state_dict keys) with
    torchvision's initialisation, or the `features.*` of a torchvision state_dict. Built alone: the full
    model's 120M-parameter classifier, which medrun never uses, costs about 0.5 GB and a second to build."""
    features = make_layers(cfgs[VGG_CONFIGS[arch]], batch_norm=batch_norm)
    for m in features.modules():  # batch norm's defaults (1, 0) are already torchvision's
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    if state is not None:
        try:  # strict: a file that fits nothing must fail, not load nothing
            features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                      if k.startswith("features.")})
        except RuntimeError as e:
            raise MedrunError(f"{key} is not a torchvision {arch}{'_bn' if batch_norm else ''} "
                              f"state_dict: {' '.join(str(e).splitlines()[:2])[:300]}") from None
    return features


def _vgg_features(arch: str, in_channels: int, pretrained, weights_path) -> nn.Sequential:
    if in_channels != 3:
        raise MedrunError(f"{arch} takes 3-channel images: set data.channels=3 (grey images are repeated)")
    if pretrained:
        only_imagenet("model.pretrained", pretrained)
    wanted = Weights("torchvision", arch, "model.pretrained") if pretrained else None
    key = f"model.weights_path={weights_path}" if weights_path else f"torchvision's {arch} weights"
    return vgg_features(arch, state=pretrained_state(weights_path, wanted, "model.weights_path"), key=key)


class VGGGAP(nn.Module):
    """MelaNet's VGG-GAP: VGG16's 13 conv layers (Keras include_top=False, so ending with block5_pool),
    global average pooling, one fully connected layer (softmax over 2 classes applied by the loss)."""

    def __init__(self, in_channels: int, num_classes: int, pretrained=None, weights_path=None):
        super().__init__()
        self.features = _vgg_features("vgg16", in_channels, pretrained, weights_path)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class FFVGG19(nn.Module):
    """Feature-fusion VGG19: the outputs of conv blocks 3, 4 and 5 (before their pooling) are each
    globally average-pooled and concatenated (256 + 512 + 512) before the linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, pretrained=None, weights_path=None):
        super().__init__()
        features = _vgg_features("vgg19", in_channels, pretrained, weights_path)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]  # 4, 9, 18, 27, 36
        self.stem = features[: pools[1] + 1]  # blocks 1-2 with their pooling
        self.block3 = features[pools[1] + 1: pools[2]]
        self.block4 = features[pools[2]: pools[3]]  # starts with block 3's pooling
        self.block5 = features[pools[3]: pools[4]]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256 + 512 + 512, num_classes)

    def forward(self, x):
        b3 = self.block3(self.stem(x))
        b4 = self.block4(b3)
        b5 = self.block5(b4)
        return self.fc(torch.cat([self.pool(b).flatten(1) for b in (b3, b4, b5)], dim=1))
