"""Corizzo et al.'s explainable setup: a U-Net generator with batch normalisation after its convolutions, trained
adversarially against a VGG16-BN discriminator; the generator's bottleneck (1024 channels, or `embedding`) gives the
features that are clustered."""
from __future__ import annotations

import torch
from torch import nn

from medrun.models.classifiers import vgg_features
from medrun.models.layers import last_module
from medrun.models.pretrained import Weights, only_imagenet, pretrained_state
from medrun.models.sharp_unet import SharpUNet


class VGG16BNDiscriminator(nn.Module):
    """VGG16 with batch norm (torchvision), global average pooling and one logit: real vs generated."""

    def __init__(self, in_channels: int, weights_path: str | None = None, pretrained=None):
        super().__init__()
        if pretrained:
            only_imagenet("model.discriminator_pretrained", pretrained)
        wanted = Weights("torchvision", "vgg16_bn", "model.discriminator_pretrained") if pretrained else None
        key = f"model.discriminator_weights_path={weights_path}" if weights_path else "torchvision's vgg16_bn weights"
        state = pretrained_state(weights_path, wanted, "model.discriminator_weights_path")
        self.features = vgg_features("vgg16", True, state, key)
        if in_channels != 3:
            first = self.features[0]
            self.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class AdversarialNet(nn.Module):
    """forward(x) -> the discriminator's logit that `x` is a real image of the trained class (N, 1);
    generate(x) -> the generator's image; feature_forward runs the generator (whose bottleneck is explained)."""

    def __init__(self, in_channels: int, filters=(64, 128, 256, 512, 1024), discriminator_weights_path=None,
                 embedding: int | None = None, discriminator_pretrained=None):
        super().__init__()
        # the embedding length (256 / 512 / 1024 in the paper) is the width of the generator's bottleneck layer
        filters = [*list(filters)[:-1], int(embedding or list(filters)[-1])]
        self.generator = SharpUNet(in_channels, in_channels, filters=filters, sharp=False, batch_norm=True)
        self.discriminator = VGG16BNDiscriminator(in_channels, discriminator_weights_path, discriminator_pretrained)

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.generator(x))  # images scaled to [0, 1]

    def feature_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def cam_layer(self) -> str:
        """Corizzo et al.: Grad-CAM on the discriminator's last convolution."""
        return "discriminator." + last_module(self.discriminator, nn.Conv2d)

    def feature_layer(self) -> str:
        """The generator's bottleneck (the embedding)."""
        return "generator." + self.generator.feature_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)
