"""Train a fold's CycleGAN on its training part (source side undersampled to the target's size), then
translate every source-side training image into the target class; montage of real / translated /
reconstructed images. Checkpointed each epoch, so an interrupted fold resumes its GAN."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from medrun.data.store import SampleStore  # noqa: E402
from medrun.data.transforms import resize  # noqa: E402
from medrun.oversample.cyclegan import CycleGAN  # noqa: E402
from medrun.runs import load_checkpoint  # noqa: E402
from medrun.training import RngState, build_loggers, close_loggers  # noqa: E402


class GanImages:
    """Original images of a store brought to the GAN's size as the classifier's are to its own (padded to a square
    first with data.pad_to_square, so synthetic images carry the same borders), as (C, H, W) tensors in [-1, 1]."""

    def __init__(self, store: SampleStore, size, channels: int):
        self.store, self.size, self.channels = store, tuple(int(v) for v in size), channels
        self.resize = resize(self.size, store.pad)

    def __call__(self, sample_id: str) -> torch.Tensor:
        image, _ = self.store.dataset.load(self.store.samples[self.store.index[sample_id]])
        image = self.resize(image=image)["image"]
        image = image[:, :, None] if image.ndim == 2 else image
        return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


class Unpaired(Dataset):
    """Each item: an image of side A and one of side B drawn at random (the two sides are not paired)."""

    def __init__(self, a: list[str], b: list[str], load: GanImages, seed: int):
        self.a, self.b, self.load, self.seed = a, b, load, seed
        self.cache: dict[str, torch.Tensor] = {}

    def _get(self, i: str) -> torch.Tensor:
        if i not in self.cache:
            self.cache[i] = self.load(i)
        return self.cache[i]

    def __len__(self):
        return len(self.a)

    def __getitem__(self, k):
        j = int(torch.randint(len(self.b), ()))  # torch's RNG: seeded by the fold and restored on resume
        return {"a": self._get(self.a[k]), "b": self._get(self.b[j])}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def train_and_translate(cfg, store: SampleStore, fold: dict, out_dir: Path, majority: list[str],
                        minority: list[str]) -> list[tuple[str, np.ndarray]]:
    ocfg = cfg.oversample
    run_dir = next(p for p in out_dir.parents if (p / "splits.json").is_file())
    # one tracker run per translator: "<fold>_cyclegan", or "<fold>_cyclegan_<source>_to_<target>"
    name = f"{fold['fold']}_cyclegan" + (f"_{out_dir.name}" if out_dir.name != "oversampling" else "")
    seed = int(cfg.seed) + fold["fold"]
    rng = np.random.default_rng(seed)
    undersampled = sorted(rng.choice(majority, size=len(minority), replace=False).tolist()) \
        if len(majority) > len(minority) else majority
    channels = int(cfg.data.channels)
    load = GanImages(store, ocfg.size, channels)
    pl.seed_everything(seed, workers=True, verbose=False)
    config = {**OmegaConf.to_container(ocfg, resolve=True), "channels": channels}
    gan = CycleGAN(config)
    loader = DataLoader(Unpaired(undersampled, minority, load, seed), batch_size=int(ocfg.batch_size), shuffle=True)
    last = out_dir / "checkpoints" / "last.ckpt"
    if last.is_file():  # refuse unsafe files before Lightning opens them
        load_checkpoint(last, bool(cfg.allow_unsafe_checkpoints))
    trainer = pl.Trainer(
        max_epochs=int(ocfg.epochs), accelerator=cfg.trainer.accelerator, devices=1, precision="32-true",
        # the run's loggers (logger=csv, [csv,mlflow], ...): logs/metrics.csv here, a W&B run "fold_<k>_cyclegan"
        logger=build_loggers(cfg, out_dir, run_dir, name, config) or False,
        default_root_dir=str(out_dir),
        # each epoch: gan.ckpt, and last.ckpt as a link to it (a full-size CycleGAN checkpoint is large)
        # RngState: a resumed GAN draws the same shuffles as an uninterrupted one
        callbacks=[ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="gan", save_last="link",
                                   enable_version_counter=False), RngState()],
        enable_progress_bar=cfg.callbacks.progress != "none", enable_model_summary=False,
        limit_train_batches=ocfg.get("limit_batches") or 1.0, deterministic=bool(cfg.trainer.deterministic),
        log_every_n_steps=1)  # the GAN curves (generator, discriminator, cycle) in logs/metrics.csv
    try:
        trainer.fit(gan, loader, ckpt_path=str(last) if last.is_file() else None,
                    weights_only=None if not last.is_file() else not cfg.allow_unsafe_checkpoints)
    finally:
        close_loggers(trainer.loggers)
    gan = gan.eval().to(trainer.strategy.root_device)
    made = []
    with torch.inference_mode():
        # every source-side training image, not only the undersampled ones; batches: the generators' instance
        # norm treats each image on its own, so a batch translates as its images would one by one
        for start in range(0, len(majority), 32):
            ids = majority[start:start + 32]
            fake = gan.g_ab(torch.stack([load(i) for i in ids]).to(gan.device))
            made += [(i, to_uint8(f)) for i, f in zip(ids, fake)]
        real = torch.stack([load(i) for i in majority[:6]]).to(gan.device)
        fake = gan.g_ab(real)
        shown = [(to_uint8(r), to_uint8(f), to_uint8(b)) for r, f, b in zip(real, fake, gan.g_ba(fake))]
    _montage(shown, out_dir / "montage.png")
    return made


def _montage(rows, path: Path) -> None:
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for r, images in enumerate(rows):
        for c, (image, title) in enumerate(zip(images, ("real (majority)", "translated", "reconstructed"))):
            ax = axes[r, c]
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
            ax.axis("off")
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
