"""The Sharp U-Net skip-connection block: a frozen depthwise 3x3 Laplacian sharpening filter."""
from __future__ import annotations

import torch
from torch import nn

SHARPEN_KERNEL = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


class SharpBlock(nn.Conv2d):
    """Depthwise convolution of every channel with SHARPEN_KERNEL; no bias, same padding, never trained.

    The kernel stays an (untrainable) parameter so that parameter counts match the reference Keras
    model, where it appears as non-trainable weights.
    """

    def __init__(self, channels: int):
        super().__init__(channels, channels, kernel_size=3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.weight.copy_(SHARPEN_KERNEL.expand(channels, 1, 3, 3))
        self.weight.requires_grad_(False)


def skip_block(channels: int, sharp: bool) -> nn.Module:
    return SharpBlock(channels) if sharp else nn.Identity()
