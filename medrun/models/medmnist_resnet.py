"""The MedMNIST v2 benchmark's ResNet-18 / ResNet-50 "(28)": the CIFAR form of the networks (Yang et al., Sci.
Data 2023; `medmnist/models.py` of the MedMNIST repository, adapted there from kuangliu/pytorch-cifar).

torchvision's ResNet with the CIFAR stem: a 3x3 stride-1 first convolution and no max-pooling, so a 28x28 image
reaches layer4 at 4x4, where the reference's 4x4 average pooling and this global average pooling agree. Blocks,
shortcuts and state layout are torchvision's (the reference's are the same layers: 3x3 convolutions, batch norm,
1x1 projection shortcuts, stride on the Bottleneck's 3x3). Convolutions keep PyTorch's default initialisation,
as in the reference, not torchvision's Kaiming normal."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50

from medrun.errors import MedrunError

DEPTHS = {18: resnet18, 50: resnet50}


def medmnist_resnet(depth: int, in_channels: int, num_classes: int) -> nn.Module:
    if int(depth) not in DEPTHS:
        raise MedrunError(f"model.depth={depth}; valid: {', '.join(map(str, DEPTHS))}")
    net = DEPTHS[int(depth)](weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    return net
