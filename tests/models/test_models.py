import pytest
import torch

import medrun
from medrun.errors import MedrunError
from medrun.models.sharp import SHARPEN_KERNEL, SharpBlock
from medrun.models.sharp_unet import SharpUNet
from medrun.models.encoder_unet import EncoderUNet
from medrun.runs import read_state_dict


def counts(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def test_sharp_unet_matches_reference_parameter_counts():
    # The authors' Keras model on 192x256x3, 1 class: 7,764,417 total of which 4,320 frozen kernel weights.
    assert counts(SharpUNet(3, 1)) == (7_760_097, 4_320)
    assert counts(SharpUNet(3, 1, sharp=False)) == (7_760_097, 0)


def test_sharp_block_is_a_frozen_depthwise_laplacian():
    block = SharpBlock(5)
    assert block.groups == 5 and block.bias is None and block.padding == (1, 1)
    assert not block.weight.requires_grad
    assert torch.equal(block.weight[3, 0], SHARPEN_KERNEL)
    # A constant image has no edges: the Laplacian is zero away from the zero-padded border.
    out = block(torch.full((1, 5, 8, 8), 3.0))
    assert torch.all(out[..., 1:-1, 1:-1] == 0)
    # An isolated bright pixel is amplified 8x at its centre and its neighbours go negative.
    x = torch.zeros(1, 5, 5, 5)
    x[..., 2, 2] = 1
    y = block(x)
    assert y[0, 0, 2, 2] == 8 and y[0, 0, 1, 1] == -1


def test_wide_variant_and_output_shape():
    wide = SharpUNet(3, 1, filters=(35, 70, 140, 280, 560))
    assert counts(wide)[1] == 9 * (35 + 70 + 140 + 280)
    assert wide(torch.zeros(1, 3, 32, 48)).shape == (1, 1, 32, 48)
    with pytest.raises(ValueError, match="divisible by 16"):
        wide(torch.zeros(1, 3, 30, 32))


def test_summary_reports_trainable_and_frozen_counts():
    text = medrun.api.model_summary(medrun.compose("train", ["experiment=sharp_unet_cvc"]))
    assert "7,760,097 trainable, 4,320 frozen" in text
    # a cascade asks for ImageNet weights in its parts' own keys: a layer table needs none of them
    text = medrun.api.model_summary(medrun.compose("train", ["experiment=cascade_siim"]))
    assert "cascade_siim: 47,420,371 trainable, 0 frozen" in text


@pytest.mark.parametrize("encoder", ["vgg16", "resnet50"])
def test_sharp_blocks_on_every_smp_skip(encoder):
    sharp, plain = EncoderUNet(3, 1, encoder, sharp=True), EncoderUNet(3, 1, encoder, sharp=False)
    skip_channels = plain.net.encoder.out_channels[1:-1]
    assert counts(sharp)[0] == counts(plain)[0]
    assert counts(sharp)[1] == 9 * sum(skip_channels)
    assert sharp(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_encoder_weights_from_a_local_file(tmp_path):
    with pytest.raises(MedrunError, match="the smp weights resnet18.imagenet are not in .* or give "
                                          "model.encoder_weights_path=/path/to/file"):  # offline, nothing cached
        EncoderUNet(3, 1, "resnet18", encoder_weights="imagenet")
    # A local state_dict is loaded into the encoder.
    source = EncoderUNet(3, 1, "resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(source.net.encoder.state_dict(), path)
    loaded = EncoderUNet(3, 1, "resnet18", encoder_weights="imagenet", encoder_weights_path=str(path))
    assert torch.equal(loaded.net.encoder.conv1.weight, source.net.encoder.conv1.weight)
    torch.save({"wrong": torch.zeros(1)}, path)
    with pytest.raises(MedrunError, match="does not fit encoder"):
        EncoderUNet(3, 1, "resnet18", encoder_weights_path=str(path))


def test_a_cascade_part_names_its_own_keys_in_errors():
    cfg = medrun.compose("train", ["experiment=cascade_siim"])  # asks both parts for ImageNet weights, not cached
    with pytest.raises(MedrunError, match=r"^model\.classifier\.pretrained: the timm weights .* or give "
                                          r"model\.classifier\.weights_path=/path/to/file$"):
        medrun.api.build_model(cfg)
    cfg.model.classifier.pretrained = None
    with pytest.raises(MedrunError, match=r"give model\.segmenter\.encoder_weights_path="):
        medrun.api.build_model(cfg)


@pytest.mark.parametrize("overrides,cam,feature", [
    (["experiment=quickstart"], "decoder.3", "encoder.4"),
    (["experiment=unet_resnet34_siim", "model.encoder_weights=null", "model.encoder=resnet18"],
     "net.decoder.blocks.4", "net.encoder"),
    (["experiment=cascade_busi", "model.classifier.backbone=resnet18", "model.segmenter.encoder=resnet18"],
     "segmenter.net.decoder.blocks.4", "segmenter.net.encoder"),
    (["experiment=corizzo_adversarial_breastmnist"], "discriminator.features.40", "generator.encoder.4"),
    (["experiment=densenet121_breastmnist", "model.pretrained=null"], "features.norm5", "classifier"),
])
def test_each_network_names_its_cam_and_feature_layers(overrides, cam, feature):
    from medrun.models import build_network
    from medrun.models.layers import default_cam_layer, default_feature_layer

    cfg = medrun.compose("train", overrides)
    net = build_network(cfg.model, int(cfg.data.channels), 2)
    modules = dict(net.named_modules())
    assert (default_cam_layer(net), default_feature_layer(net)) == (cam, feature)
    assert cam in modules and feature in modules


@pytest.mark.parametrize("arch, batch_norm", [("vgg16", False), ("vgg16", True), ("vgg19", False)])
def test_vgg_features_are_torchvisions_without_the_classifier(arch, batch_norm, tmp_path):
    import torchvision

    from medrun.models.adversarial import VGG16BNDiscriminator
    from medrun.models.classifiers import vgg_features

    ours = vgg_features(arch, batch_norm)
    full = getattr(torchvision.models, arch + ("_bn" if batch_norm else ""))(weights=None)
    theirs = full.features
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    torch.save(full.state_dict(), tmp_path / "imagenet.pth")  # an ImageNet file of torchvision's loads as it is
    loaded = vgg_features(arch, batch_norm, read_state_dict(tmp_path / "imagenet.pth", "file"))
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in loaded.state_dict().items())
    if batch_norm:  # the discriminator's file goes through the same door, and a wrong one is named by its key
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "plain.pth")
        with pytest.raises(MedrunError, match="model.discriminator_weights_path=.* is not a torchvision vgg16_bn"):
            VGG16BNDiscriminator(3, str(tmp_path / "plain.pth"))
    conv = [m for m in vgg_features(arch, batch_norm) if isinstance(m, torch.nn.Conv2d)]
    # torchvision's initialisation: He normal over the fan-out, zero bias (PyTorch's default would be uniform)
    fan_out = conv[-1].out_channels * 9
    assert conv[-1].weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert all(torch.count_nonzero(c.bias) == 0 for c in conv)


@pytest.mark.parametrize("depth,blocks,params", [(18, [2, 2, 2, 2], 11_173_962), (50, [3, 4, 6, 3], 23_520_842)])
def test_medmnist_resnet_is_the_published_cifar_form(depth, blocks, params):
    """MedMNIST's `medmnist/models.py` (kuangliu's CIFAR ResNet): 3x3 stride-1 stem, no max-pooling, stages of
    64-128-256-512 planes at strides 1-2-2-2, 4x4 maps before pooling on 28x28 inputs; with 3 input channels and 10
    classes the reference has 11,173,962 (ResNet-18) and 23,520,842 (ResNet-50) parameters."""
    from torch import nn

    from medrun.models.medmnist_resnet import medmnist_resnet

    net = medmnist_resnet(depth, 3, 10)
    assert sum(p.numel() for p in net.parameters()) == params
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding, net.conv1.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(net.maxpool, nn.Identity)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    assert [len(s) for s in stages] == blocks
    assert [max(m.stride for m in s[0].modules() if isinstance(m, nn.Conv2d)) for s in stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    seen = {}
    net.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    assert net(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert seen["shape"] == (2, 512 * (1 if depth == 18 else 4), 4, 4)
    # PyTorch's default convolution initialisation, as in the reference: |w| <= 1 / sqrt(fan_in)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= fan_in ** -0.5 + 1e-7
    with pytest.raises(MedrunError, match="model.depth=34; valid: 18, 50"):
        medrun.models.build_network(medrun.compose("train", ["experiment=medmnist_v2_breastmnist", "model.depth=34"]).model,
                                    3, 2)
