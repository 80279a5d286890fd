"""Network builders, selected by `model.name`."""
from __future__ import annotations

import re

from omegaconf import DictConfig
from torch import nn

from medrun.errors import MedrunError
from medrun.models.adversarial import AdversarialNet
from medrun.models.cascade import CascadeNet
from medrun.models.classifiers import FFVGG19, VGGGAP, timm_classifier
from medrun.models.medmnist_resnet import medmnist_resnet
from medrun.models.sharp_unet import SharpUNet
from medrun.models.encoder_unet import EncoderUNet
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


@MODELS.register("timm")
def _timm(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return timm_classifier(cfg.backbone, in_channels, out_channels, pretrained=cfg.get("pretrained"),
                           weights_path=cfg.get("weights_path"), drop_rate=float(cfg.get("drop_rate", 0.0)))


@MODELS.register("medmnist_resnet")
def _medmnist_resnet(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return medmnist_resnet(cfg.depth, in_channels, out_channels)


@MODELS.register("vgg_gap")
def _vgg_gap(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return VGGGAP(in_channels, out_channels, pretrained=cfg.get("pretrained"), weights_path=cfg.get("weights_path"))


@MODELS.register("ffvgg19")
def _ffvgg19(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return FFVGG19(in_channels, out_channels, pretrained=cfg.get("pretrained"), weights_path=cfg.get("weights_path"))


@MODELS.register("adversarial")
def _adversarial(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    return AdversarialNet(in_channels, filters=cfg.filters, discriminator_weights_path=cfg.get("discriminator_weights_path"),
                          embedding=cfg.get("embedding"), discriminator_pretrained=cfg.get("discriminator_pretrained"))


@MODELS.register("cascade")
def _cascade(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    """model.classifier and model.segmenter are model configs of their own (2 classes, 1 mask channel)."""
    return CascadeNet(_part(cfg, "classifier", in_channels, 2), _part(cfg, "segmenter", in_channels, 1),
                      cfg.get("classifier_size") or (224, 224))


def _part(cfg: DictConfig, part: str, in_channels: int, out_channels: int) -> nn.Module:
    """One network of a cascade; its errors name the keys under model.<part>, where they are set."""
    try:
        return build_network(cfg[part], in_channels, out_channels)
    except MedrunError as e:
        raise MedrunError(re.sub(r"(?<![\w.])model\.", f"model.{part}.", str(e))) from None


def build_network(cfg: DictConfig, in_channels: int, out_channels: int) -> nn.Module:
    """The network named by `cfg.name` (model.name) with `in_channels` inputs and `out_channels` outputs."""
    return MODELS.get(cfg.name)(cfg, in_channels, out_channels)
