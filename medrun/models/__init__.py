"""Network builders, selected by `model.name`."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from medrun.models.sharp_unet import SharpUNet
from medrun.models.smp_unet import EncoderUNet
from medrun.registry import Registry

MODELS: Registry = Registry("model", "model.name")


@MODELS.register("sharp_unet")
def _sharp_unet(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return SharpUNet(in_channels, out_channels, filters=cfg.filters, sharp=bool(cfg.sharp))


@MODELS.register("smp_unet")
def _smp_unet(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return EncoderUNet(in_channels, out_channels, encoder=cfg.encoder, decoder_channels=cfg.decoder_channels,
                       sharp=bool(cfg.sharp), encoder_weights=cfg.get("encoder_weights"),
                       encoder_weights_path=cfg.get("encoder_weights_path"))


def build_network(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return MODELS.get(cfg.name)(cfg, in_channels, out_channels)
