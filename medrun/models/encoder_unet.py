"""U-Net on a segmentation-models-pytorch encoder, optionally with Sharp blocks on every skip.

Pretrained encoder weights: a local file (`model.encoder_weights_path`), or smp's own (`model.encoder_weights=imagenet`)
from the Hugging Face cache (medrun.models.pretrained).
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from medrun.errors import MedrunError
from medrun.models.pretrained import Weights, pretrained_state
from medrun.models.sharp import skip_block


class EncoderUNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, encoder: str, decoder_channels=(256, 128, 64, 32, 16),
                 sharp: bool = True, encoder_weights: str | None = None, encoder_weights_path: str | None = None):
        super().__init__()
        wanted = Weights("smp", f"{encoder}.{encoder_weights}", "model.encoder_weights") if encoder_weights else None
        pretrained = bool(encoder_weights_path or wanted)
        try:  # pretrained weights are 3-channel: loaded first, then smp adapts the stem to in_channels
            self.net = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=3 if pretrained else in_channels,
                                classes=out_channels, decoder_channels=tuple(int(c) for c in decoder_channels))
        except KeyError as e:
            raise MedrunError(f"model.encoder={encoder!r} is not an encoder smp knows ({e}); "
                              "see segmentation_models_pytorch.encoders.get_encoder_names()") from None
        if pretrained:
            state = pretrained_state(encoder_weights_path, wanted, "model.encoder_weights_path")
            source = f"model.encoder_weights_path={encoder_weights_path}" if encoder_weights_path else wanted.name
            try:
                self.net.encoder.load_state_dict(state)
            except RuntimeError as e:
                raise MedrunError(f"{source} does not fit encoder {encoder}: "
                                  f"{' '.join(str(e).splitlines()[:2])[:300]}") from None
            self.net.encoder.set_in_channels(in_channels, pretrained=True)
        channels = self.net.encoder.out_channels
        # smp's decoder drops feature 0 (input resolution) and uses the last as its centre: the rest are skips.
        self.skips = nn.ModuleList(skip_block(c, sharp) for c in channels[1:-1])

    @property
    def backbone(self) -> nn.Module:
        """The smp encoder (what BackboneFinetuning freezes)."""
        return self.net.encoder

    def cam_layer(self) -> str:
        """Grad-CAM on the last decoder block: the map has the mask's resolution."""
        return f"net.decoder.blocks.{len(self.net.decoder.blocks) - 1}"

    def feature_layer(self) -> str:
        """The encoder: its output is the list of stages, of which the last is taken."""
        return "net.encoder"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.net.encoder.output_stride
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {stride}")
        features = self.net.encoder(x)
        features = [features[0], *(s(f) for s, f in zip(self.skips, features[1:-1])), features[-1]]
        return self.net.segmentation_head(self.net.decoder(features))

