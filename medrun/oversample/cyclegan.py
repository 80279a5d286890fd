"""CycleGAN (Zhu et al.) between two classes, as MelaNet uses it: two U-Net generators (MONAI), two PatchGAN
discriminators with instance norm (MONAI), an adversarial loss from MONAI (`adversarial_loss`: the thesis'
log-likelihood `bce`, or the reference code's `least_squares`), cycle-consistency L1 with lambda 10 and an
optional identity loss (`lambda_identity`, a multiple of lambda), Adam 2e-4 with beta1 0.5. Manual optimisation: Lightning does
not step schedulers here, and `global_step` counts both optimisers' steps (two per batch)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator, UNet
from omegaconf import OmegaConf
from torch import nn

from medrun.tasks.optim import manual_step


class Generator(nn.Module):
    """An encoder-decoder with skips down to 1x1 at 256x256 (the reference unet_256: 64-128-256-512x5), instance
    norm, leaky ReLU; tanh output in [-1, 1]."""

    def __init__(self, channels: int, widths=(64, 128, 256, 512, 512, 512, 512, 512)):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.net = UNet(spatial_dims=2, in_channels=channels, out_channels=channels, channels=widths,
                        strides=(2,) * (len(widths) - 1), num_res_units=0, norm="INSTANCE",
                        act=("LEAKYRELU", {"negative_slope": 0.2}))

    def forward(self, x):
        return torch.tanh(self.net(x))


def discriminator(channels: int, width: int = 64, layers: int = 3) -> nn.Module:
    """The 70x70 PatchGAN: 30x30 real/fake scores for a 256x256 image."""
    return PatchDiscriminator(spatial_dims=2, channels=width, in_channels=channels, num_layers_d=layers,
                              norm="INSTANCE")


class CycleGAN(pl.LightningModule):
    """Translates class A (the majority, e.g. benign) into class B (the minority) and back."""

    def __init__(self, config: dict):
        super().__init__()
        # plain values, so checkpoints load with weights_only=True; not sent to loggers (paths)
        self.save_hyperparameters({"config": config}, logger=False)
        cfg = OmegaConf.create(config)
        self.cfg = cfg
        self.automatic_optimization = False
        c = int(cfg.channels)
        self.g_ab, self.g_ba = Generator(c, cfg.generator.widths), Generator(c, cfg.generator.widths)
        self.d_a = discriminator(c, int(cfg.discriminator.width), int(cfg.discriminator.layers))
        self.d_b = discriminator(c, int(cfg.discriminator.width), int(cfg.discriminator.layers))
        self.adversarial = PatchAdversarialLoss(criterion=str(cfg.get("adversarial_loss") or "least_squares"))
        self.l1 = nn.L1Loss()

    def configure_optimizers(self):
        betas = tuple(float(b) for b in self.cfg.betas)
        lr = float(self.cfg.lr)
        return [torch.optim.Adam([*self.g_ab.parameters(), *self.g_ba.parameters()], lr=lr, betas=betas),
                torch.optim.Adam([*self.d_a.parameters(), *self.d_b.parameters()], lr=lr, betas=betas)]

    def _fools(self, d, fake):
        return self.adversarial(d(fake)[-1], target_is_real=True, for_discriminator=False)

    def _judges(self, d, real, fake):
        return 0.5 * (self.adversarial(d(real)[-1], target_is_real=True, for_discriminator=True)
                      + self.adversarial(d(fake.detach())[-1], target_is_real=False, for_discriminator=True))

    def cycle_loss(self, real_a, real_b):
        """L1 between each image and its round trip (A -> B -> A, B -> A -> B)."""
        return self.l1(self.g_ba(self.g_ab(real_a)), real_a) + self.l1(self.g_ab(self.g_ba(real_b)), real_b)

    def generator_loss(self, real_a, real_b):
        """(total, adversarial, cycle, fake_a, fake_b): adversarial + lambda * cycle L1 (+ identity L1)."""
        lam, lam_id = float(self.cfg.lambda_cycle), float(self.cfg.lambda_identity)
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        adversarial = self._fools(self.d_b, fake_b) + self._fools(self.d_a, fake_a)
        cycle = self.l1(self.g_ba(fake_b), real_a) + self.l1(self.g_ab(fake_a), real_b)
        total = adversarial + lam * cycle
        if lam_id:  # the reference's identity term: a generator leaves images of its target class alone
            total = total + lam * lam_id * (self.l1(self.g_ab(real_b), real_b) + self.l1(self.g_ba(real_a), real_a))
        return total, adversarial, cycle, fake_a, fake_b

    def discriminator_loss(self, real_a, real_b, fake_a, fake_b):
        return self._judges(self.d_b, real_b, fake_b) + self._judges(self.d_a, real_a, fake_a)

    def training_step(self, batch, batch_idx):
        real_a, real_b = batch["a"], batch["b"]
        opt_g, opt_d = self.optimizers()
        with self.toggled_optimizer(opt_g):
            loss_g, adversarial, cycle, fake_a, fake_b = self.generator_loss(real_a, real_b)
            loss_g = manual_step(self, opt_g, loss_g)
        with self.toggled_optimizer(opt_d):
            loss_d = manual_step(self, opt_d, self.discriminator_loss(real_a, real_b, fake_a, fake_b))
        self.log_dict({"gan/generator": loss_g, "gan/adversarial": adversarial.detach(),
                       "gan/cycle": cycle.detach(), "gan/discriminator": loss_d}, prog_bar=True,
                      batch_size=len(real_a))
        return loss_g
