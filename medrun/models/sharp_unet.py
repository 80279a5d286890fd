"""Sharp U-Net (Zunair & Ben Hamza, 2021), matching the authors' Keras reference model layer for layer.

Encoder: per stage two 3x3 conv + ReLU, 2x2 max-pooling between stages. Decoder: 2x2 transposed conv,
concatenation with the (sharpened) skip, two 3x3 conv + ReLU. A 1x1 conv gives logits; sigmoid or
softmax is applied by the loss and at inference. No batch normalisation (`batch_norm=True` adds it after every
3x3 conv, as Corizzo et al.'s generator has it).
"""
from __future__ import annotations

import torch
from torch import nn

from medrun.models.sharp import skip_block


def double_conv(cin: int, cout: int, batch_norm: bool = False) -> nn.Sequential:
    def conv(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, padding=1), *([nn.BatchNorm2d(b)] if batch_norm else []), nn.ReLU(inplace=True)]

    return nn.Sequential(*conv(cin, cout), *conv(cout, cout))


class SharpUNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, filters=(32, 64, 128, 256, 512), sharp: bool = True,
                 batch_norm: bool = False):
        super().__init__()
        filters = [int(f) for f in filters]
        self.encoder = nn.ModuleList(
            double_conv(cin, cout, batch_norm) for cin, cout in zip([in_channels, *filters[:-1]], filters)
        )
        self.pool = nn.MaxPool2d(2)
        skips = filters[:-1][::-1]  # 256, 128, 64, 32
        self.skips = nn.ModuleList(skip_block(c, sharp) for c in skips)
        self.up = nn.ModuleList(nn.ConvTranspose2d(cin, c, 2, stride=2) for cin, c in zip(filters[::-1], skips))
        self.decoder = nn.ModuleList(double_conv(2 * c, c, batch_norm) for c in skips)
        self.head = nn.Conv2d(filters[0], out_channels, 1)
        self.depth = len(filters) - 1

    def cam_layer(self) -> str:
        """Grad-CAM on the last decoder block: the map has the mask's resolution."""
        return f"decoder.{len(self.decoder) - 1}"

    def feature_layer(self) -> str:
        """The bottleneck: the encoder's last stage."""
        return f"encoder.{len(self.encoder) - 1}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {factor}")
        features = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            features.append(x)
        x = features.pop()
        for skip, up, dec in zip(self.skips, self.up, self.decoder):
            x = dec(torch.cat([up(x), skip(features.pop())], dim=1))
        return self.head(x)
