"""medrun benchmarks: training-loop overhead against a hand-written loop, data pipeline, evaluation speed,
the data cache, and (on a GPU) throughput, peak memory and model FLOPs utilisation. Writes benchmarks/<name>.md.

    python scripts/bench.py                      # CPU table -> benchmarks/cpu.md
    python scripts/bench.py --gpu --name gpu     # on a CUDA machine -> benchmarks/gpu.md
    python scripts/bench.py --quick --out /tmp   # tiny sizes (what the tests run)
    python scripts/bench.py --only cache --merge # re-measure one section inside benchmarks/cpu.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDRUN_SHARED_DATA", REPO.parent / "shared" / "data"))  # as the tests read it


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} (min {min(values):.4g}, max {max(values):.4g}, n={len(values)})"


# ---------------------------------------------------------------- training-loop overhead
class HandStep:
    """The simplest training step: the same model, a batch already in memory, Adam, BCE with logits."""

    def __init__(self, size, batch, seed, device="cpu", precision=None, channels_last=False, compile=False,
                 sharp=True):
        from medrun.models.sharp_unet import SharpUNet

        torch.manual_seed(seed)
        h, w = size
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.model = SharpUNet(3, 1, sharp=sharp).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)
        self.x = torch.rand(batch, 3, h, w, device=device)
        self.y = (torch.rand(batch, 1, h, w, device=device) > 0.7).float()
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def __call__(self) -> float:
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            loss = self.loss_fn(self.step_model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        if self.device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t


def _hand_steps(size, batch, steps, warmup, seed, **kw):
    """Seconds per hand-written step (after `warmup` steps)."""
    step = HandStep(size, batch, seed, **kw)
    return [step() for _ in range(warmup + steps)][warmup:]


def interleaved_steps(size, batch, steps, warmup, seed, overrides=()):
    """(medrun, hand-written) seconds per step, alternating one step of each in one process.

    medrun's step is the time from the end of the previous hand-written step to the end of its own batch:
    its data loader, LightningModule, Trainer, callbacks and logger; the hand-written step runs in between,
    from a Lightning callback, so load changes on the machine hit both alike."""
    import pytorch_lightning as pl

    import medrun
    from medrun.api import build_splits, build_store
    from medrun.data.datamodule import FoldDataModule
    from medrun.tasks import TASKS
    from medrun.training import build_callbacks, build_loggers, build_trainer

    h, w = size
    # One epoch holds every timed step (about 81 % of the samples train), so validation is never timed.
    count = int(batch * (warmup + steps + 2) / 0.8) + batch
    cfg = medrun.compose("train", ["data=synthetic", f"data.count={count}", f"data.source_size=[{h},{w}]",
                                   f"data.image_size=[{h},{w}]", "data.channels=3", f"data.batch_size={batch}",
                                   "cv=holdout", "cv.val_fraction=0.1", "cv.test_fraction=0.1",
                                   f"+trainer.max_steps={warmup + steps}", "trainer.max_epochs=1000",
                                   "+trainer.limit_val_batches=1", *overrides])
    store = build_store(cfg)
    fold = build_splits(cfg, store)["folds"][0]
    hand = HandStep(size, batch, seed)
    med_times, hand_times = [], []

    class Alternate(pl.Callback):
        def __init__(self):
            self.mark = None

        def on_train_start(self, *args):
            self.mark = time.perf_counter()

        def on_train_batch_end(self, *args):
            med_times.append(time.perf_counter() - self.mark)
            hand_times.append(hand())
            self.mark = time.perf_counter()

    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"medrun-bench-{os.getpid()}"
    pl.seed_everything(seed, verbose=False)
    task = TASKS.get("segmentation")(medrun.api.to_plain(cfg))
    trainer = build_trainer(cfg, out, [*build_callbacks(cfg, out, "1/1"), Alternate()],
                            build_loggers(cfg, out, out, 0, {}))
    trainer.fit(task, datamodule=FoldDataModule(store, fold, cfg.data, seed))
    return med_times[warmup:], hand_times[warmup:]


def iqr(values) -> str:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.4g} (IQR {q1:.4g}-{q3:.4g}, n={len(values)})"


def training_overhead(size, batch, steps, warmup):
    """medrun's training step against the hand-written one, interleaved; the ratio of the medians."""
    med, hand = interleaved_steps(size, batch, steps, warmup, seed=0)
    ratio = statistics.median(med) / statistics.median(hand)
    rows = [("hand-written loop, s/step", iqr(hand)), ("medrun full path, s/step", iqr(med)),
            ("medrun / hand-written", f"{ratio:.3f}"),
            ("images/s (hand, medrun)", f"{batch / statistics.median(hand):.1f}, {batch / statistics.median(med):.1f}")]
    # the batched cached path with random flips: its loader, augmentation and normalisation inside the step
    flips = ("data.augment=[{_target_: albumentations.HorizontalFlip, p: 0.5}, "
             "{_target_: albumentations.VerticalFlip, p: 0.5}]")
    med, hand = interleaved_steps(size, batch, steps, warmup, seed=0, overrides=["data.batched=true", flips])
    return rows + [("medrun, batched path + flips, s/step", iqr(med)),
                   ("medrun batched path + flips / hand-written (batch already in memory)",
                    f"{statistics.median(med) / statistics.median(hand):.3f}")]


# ---------------------------------------------------------------- data pipeline
def _rate(fn, items, repeats=3):
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for it in items:
            fn(it)
        rates.append(len(items) / (time.perf_counter() - t))
    return rates


def data_pipeline(quick: bool):
    import cv2
    import tifffile
    from PIL import Image

    import medrun
    from medrun.api import build_store
    from medrun.data.datamodule import FoldDataModule
    from medrun.data.transforms import pipeline

    rows = []
    sets = {"CVC-ClinicDB TIFF": ("cvc_clinicdb", SHARED / "cvc_clinicdb_sample/CVC-ClinicDB", (192, 256)),
            "ISBI-2012 PNG": ("isbi2012", SHARED / "isbi2012", (256, 256))}
    for label, (data, root, (h, w)) in sets.items():
        if not root.is_dir():
            rows.append((label, f"skipped: {root} missing"))
            continue
        cfg = medrun.compose("train", [f"data={data}", f"data.root={root}", "+augment=aucmedi", "data.num_workers=0"])
        store = build_store(cfg, preload=False)
        samples = store.samples[:6] if quick else store.samples
        if data == "cvc_clinicdb":
            bare = lambda s: (cv2.resize(tifffile.imread(s.image), (w, h)), cv2.resize(tifffile.imread(s.mask), (w, h), interpolation=cv2.INTER_NEAREST))  # noqa: E731
        else:
            bare = lambda s: (cv2.resize(np.asarray(Image.open(s.image)), (w, h)), cv2.resize(np.asarray(Image.open(s.mask)), (w, h), interpolation=cv2.INTER_NEAREST))  # noqa: E731
        transform = pipeline(cfg.data, train=True)

        def medrun_decode(s, store=store):
            image, mask = store.dataset.load(s)
            return store._resize(image=image, mask=mask)

        def medrun_sample(s, transform=transform):
            out = medrun_decode(s)
            return transform(image=out["image"], mask=out["mask"])

        rows.append((f"{label}: bare tifffile/PIL + cv2 resize, samples/s", spread(_rate(bare, samples))))
        rows.append((f"{label}: medrun decode + checks + resize, samples/s", spread(_rate(medrun_decode, samples))))
        rows.append((f"{label}: medrun decode + resize + augment, samples/s", spread(_rate(medrun_sample, samples))))
        for cache in (False, True):
            for workers in (0, 2) if quick else (0, 1, 2):
                c = medrun.compose("train", [f"data={data}", f"data.root={root}", "+augment=aucmedi",
                                             f"data.cache={str(cache).lower()}", f"data.num_workers={workers}",
                                             "data.batch_size=4", "data.batched=false"])
                st = build_store(c, preload=False)
                ids = [s.id for s in st.samples[: len(samples)]]
                loader = FoldDataModule(st, {"train": ids, "val": ids, "test": ids}, c.data, 0).train_dataloader()
                rates = []
                for _ in range(2 if quick else 4):  # the first pass starts the workers and fills the cache
                    t = time.perf_counter()
                    n = sum(len(b["image"]) for b in loader)
                    rates.append(n / (time.perf_counter() - t))
                rows.append((f"{label}: per-sample loader, cache={'on' if cache else 'off'}, workers={workers}, "
                             "samples/s (passes after the first)", spread(rates[1:])))
        rows += batched_rates(label, data, root, quick)
    return rows


def batched_rates(label, data, root, quick: bool):
    """The batched path: cached uint8 batches gathered by index, augmented and normalised in the batch (here on
    the CPU), against the per-sample albumentations loader on the same flips, batch 32."""
    import medrun
    from medrun.api import build_store
    from medrun.data.batched import BatchFlips, augment_and_normalize
    from medrun.data.datamodule import FoldDataModule

    flips = ("data.augment=[{_target_: albumentations.HorizontalFlip, p: 0.5}, "
             "{_target_: albumentations.VerticalFlip, p: 0.5}]")
    rows = []
    sets = (("flips", flips), ("AUCMEDI set", "+augment=aucmedi")) if data == "cvc_clinicdb" else (("flips", flips),)
    for name, augment in sets:  # (the AUCMEDI set's hue and saturation need RGB: CVC only)
        for batched in ("true", "false"):
            c = medrun.compose("train", [f"data={data}", f"data.root={root}", augment, "data.batch_size=32",
                                         f"data.batched={batched}"])
            st = build_store(c)
            ids = [s.id for s in st.samples] * (4 if quick else 40)  # the real images, repeated into an epoch
            st = st.with_samples([])
            dm = FoldDataModule(st, {"train": ids, "val": ids, "test": ids}, c.data, 0)
            loader = dm.train_dataloader()
            rates = []
            for _ in range(3):
                t = time.perf_counter()
                n = 0
                for b in loader:  # the batched path's device step (here on the CPU) as the Trainer would run it
                    b = augment_and_normalize(b, dm.augmentation, c.data.normalize, True) if dm.batched else b
                    n += len(b["image"])
                rates.append(n / (time.perf_counter() - t))
            path = dm.path.split(",")[0] + ")" if dm.batched else "per-sample (albumentations)"
            rows.append((f"{label}: {path} path, {name}, batch 32, samples/s", spread(rates)))
            if dm.batched and isinstance(dm.augmentation, BatchFlips):  # up to the float conversion
                flipped = []
                for _ in range(3):
                    t = time.perf_counter()
                    flipped.append(sum(len(dm.augmentation(b["image"], b["target"])[0]) for b in loader)
                                   / (time.perf_counter() - t))
                rows.append((f"{label}: batched path, gather + flips, the augmented uint8 batch (before the float "
                             "conversion), batch 32, samples/s", spread(flipped)))
            if dm.batched and name == "flips":  # the CPU's whole part in a GPU run; the same for any set
                gathered = []
                for _ in range(3):
                    t = time.perf_counter()
                    gathered.append(sum(len(b["image"]) for b in loader) / (time.perf_counter() - t))
                rows.append((f"{label}: batched path, the CPU's part in a GPU run (gather by index), batch 32, "
                             "samples/s", spread(gathered)))
    return rows


# ---------------------------------------------------------------- evaluation
def evaluation(quick: bool):
    from medrun.evaluation.metrics import compact, confusion, scores
    from medrun.evaluation.thresholds import search_pixel_threshold
    from medrun.evaluation.tta import tta_probabilities
    from medrun.models.sharp_unet import SharpUNet

    n, side = (100, 64) if quick else (1000, 256)
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(n, side, side, generator=g) > 0.8).long()  # class indices, as the loaders give them
    probs = (target.float() * 0.5 + torch.rand(n, side, side, generator=g) * 0.5)
    target = compact(target)  # as evaluation collects them
    t_metrics, t_search = [], []
    for _ in range(5):
        t = time.perf_counter()
        scores(*confusion(probs[:, None], target, True), ["bg", "fg"])
        t_metrics.append(time.perf_counter() - t)
        t = time.perf_counter()
        search_pixel_threshold(probs, target, bins=100)
        t_search.append(time.perf_counter() - t)
    model = SharpUNet(3, 1).eval()
    x = torch.rand(4, 3, 64, 64) if quick else torch.rand(8, 3, 192, 256)
    cost = {}
    with torch.inference_mode():
        for mode in ("none", "flips", "d4"):
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                tta_probabilities(lambda v: torch.sigmoid(model(v)), x, mode, spatial=True)
                ts.append(time.perf_counter() - t)
            cost[mode] = statistics.median(ts)
    return [(f"Dice/IoU/precision/recall over {n} masks {side}x{side}, s", spread(t_metrics)),
            (f"threshold search, 100 thresholds over {n} maps {side}x{side}, s", spread(t_search)),
            ("TTA cost factor vs none (flips, d4)", f"{cost['flips'] / cost['none']:.2f}, {cost['d4'] / cost['none']:.2f}")]


def cascade_evaluation(quick: bool):
    """What the cascade adds to the segmenter's own evaluation: the classifier's forward pass (once per image)
    and the joint search of its decision threshold with the pixel threshold and minimum area."""
    from medrun.evaluation.postprocess import search_cascade
    from medrun.evaluation.thresholds import search_pixel_threshold
    from medrun.models import build_network
    from omegaconf import OmegaConf

    n, side = (40, 64) if quick else (1000, 256)
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(n, side, side, dtype=torch.long)
    target[n // 2:, side // 4: side // 2, side // 4: side // 2] = 1
    seg = (target * 0.5 + torch.rand(n, side, side, generator=g) * 0.5)
    cls = torch.rand(n, generator=g)
    areas = (0, 64, 256, 1024)
    t_seg, t_casc = [], []
    search_pixel_threshold(seg, target, min_areas=areas)  # warm-up: first-touch of the memory
    search_cascade(seg, cls, target, min_areas=areas)
    for _ in range(5):  # alternating, so load changes hit both alike
        t = time.perf_counter()
        search_pixel_threshold(seg, target, min_areas=areas)
        t_seg.append(time.perf_counter() - t)
        t = time.perf_counter()
        search_cascade(seg, cls, target, min_areas=areas)
        t_casc.append(time.perf_counter() - t)
    cfg = OmegaConf.load(REPO / "configs" / "model" / "cascade.yaml")
    net = build_network(cfg, 3, 2).eval()
    x = torch.rand(2 if quick else 8, 3, 64 if quick else 256, 64 if quick else 256)
    t_fwd_seg, t_fwd_all = [], []
    with torch.inference_mode():
        net(x)
        for _ in range(5):
            t = time.perf_counter()
            net.segment(x)
            t_fwd_seg.append(time.perf_counter() - t)
            t = time.perf_counter()
            net(x)
            t_fwd_all.append(time.perf_counter() - t)
    search_added = statistics.median(t_casc) / statistics.median(t_seg) - 1
    fwd_added = statistics.median(t_fwd_all) / statistics.median(t_fwd_seg) - 1
    return [(f"segmenter search (threshold x {len(areas)} min areas) over {n} maps {side}x{side}, s", spread(t_seg)),
            ("cascade search (+ 19 decision thresholds) over the same maps, s", spread(t_casc)),
            ("search time the cascade adds", f"{100 * search_added:.1f} %"),
            (f"forward, U-Net ResNet34 alone, batch {len(x)} at {x.shape[-1]}, s", spread(t_fwd_seg)),
            ("forward, + ResNeXt50 classifier at 224 (once per image), s", spread(t_fwd_all)),
            ("network time the classifier adds", f"{100 * fwd_added:.1f} %")]


def explanation(quick: bool):
    """Grad-CAM images/s (a ResNet18 classifier and a Sharp U-Net) and t-SNE / UMAP on 1,000 x 1,024 features."""
    import timm

    from medrun.explain.cam import compute_cams, targets_for
    from medrun.explain.clusters import EMBEDDINGS, cluster
    from medrun.explain.layers import find_layer
    from medrun.models.layers import default_cam_layer
    from medrun.models.sharp_unet import SharpUNet

    rows = []
    side, n = (32, 4) if quick else (224, 32)
    for name, net, spatial in (("ResNet18 classifier", timm.create_model("resnet18", num_classes=2), False),
                               ("Sharp U-Net segmenter", SharpUNet(3, 1), True)):
        net.eval()
        x = torch.rand(n, 3, side, side)
        with torch.no_grad():
            targets = targets_for(net(x), spatial)
        layer = find_layer(net, default_cam_layer(net))
        compute_cams(net, layer, "gradcam", x[:2], targets[:2])  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            compute_cams(net, layer, "gradcam", x, targets)
            times.append(n / (time.perf_counter() - t))
        rows.append((f"Grad-CAM, {name} {side}x{side}, images/s", spread(times)))
    m, d = (100, 64) if quick else (1000, 1024)
    feats = np.random.default_rng(0).normal(size=(m, d)).astype(np.float32)
    for embed in ("tsne", "umap"):
        t = time.perf_counter()
        EMBEDDINGS.get(embed)(feats, 0)
        rows.append((f"{embed} of {m} x {d} features, s", f"{time.perf_counter() - t:.3g}"))
    t = time.perf_counter()
    cluster(feats, ["k-means", "birch", "agglomerative"], 4, 0)
    rows.append((f"k-means + Birch + agglomerative (k=4) of {m} x {d} features, s", f"{time.perf_counter() - t:.3g}"))
    return rows


def gan_rate(quick: bool, device: str = "cpu"):
    """CycleGAN training images/s at the paper's settings (256x256, batch 1, full-size networks)."""
    from medrun.oversample.cyclegan import CycleGAN

    size, widths = (32, [8, 16, 32, 64, 64]) if quick else (256, [64, 128, 256, 512, 512, 512, 512, 512])
    config = {"channels": 3, "lr": 2e-4, "betas": [0.5, 0.999], "lambda_cycle": 10.0, "lambda_identity": 0.5,
              "generator": {"widths": widths}, "discriminator": {"width": 8 if quick else 64, "layers": 3}}
    gan = CycleGAN(config).to(device)
    opt_g, opt_d = gan.configure_optimizers()
    a, b = torch.rand(1, 3, size, size, device=device) * 2 - 1, torch.rand(1, 3, size, size, device=device) * 2 - 1

    def step():  # the training step's losses and updates, without Lightning's loop
        loss_g, _, _, fake_a, fake_b = gan.generator_loss(a, b)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        loss_d = gan.discriminator_loss(a, b, fake_a.detach(), fake_b.detach())
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

    step()
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(1 / (time.perf_counter() - t))
    params = sum(p.numel() for p in gan.parameters()) / 1e6
    return [(f"CycleGAN training, {size}x{size}, batch 1, {params:.1f} M parameters, image pairs/s on {device}",
             spread(rates))]


# ---------------------------------------------------------------- allocator
ALLOCATOR_CHILD = """
import resource, sys, time, timm, torch
from medrun.allocator import keep_freed_memory
from medrun.evaluation.tta import tta_probabilities
if sys.argv[1] == "kept":
    assert keep_freed_memory()
side, batch, batches = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = timm.create_model("densenet121", pretrained=False, num_classes=2).eval()
x = torch.rand(batch, 3, side, side)
with torch.inference_mode():
    tta_probabilities(lambda v: model(v).softmax(1), x, "flips", spatial=False)  # warm-up
    before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(batches):
        tta_probabilities(lambda v: model(v).softmax(1), x, "flips", spatial=False)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
print(batch * batches / wall, after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime,
      after.ru_minflt - before.ru_minflt, after.ru_maxrss / 1024)
"""


def allocator_rows(quick: bool):
    """Inference (DenseNet121, flips TTA, as `medrun eval tta=flips`) with glibc's default malloc and with
    medrun.allocator.keep_freed_memory(), each in its own process since the setting is process-wide."""
    import subprocess

    side, batch, batches = (64, 4, 2) if quick else (224, 16, 8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    rows = []
    for mode, label in (("default", "glibc default"), ("kept", "keep_freed_memory()")):
        out = subprocess.run([sys.executable, "-c", ALLOCATOR_CHILD, mode, str(side), str(batch), str(batches)],
                             env=env, capture_output=True, text=True, check=True).stdout.split()
        rate, kernel, user, faults, peak = (float(v) for v in out)
        rows.append((f"DenseNet121 {side}x{side}, batch {batch}, flips TTA, {label}: images/s; kernel / user "
                     f"CPU s; minor page faults; peak RSS MB",
                     f"{rate:.3g}; {kernel:.3g} / {user:.3g}; {faults:.0f}; {peak:.0f}"))
    return rows


# ---------------------------------------------------------------- GPU throughput and MFU
def matmul_rate(device, dtype=torch.bfloat16, n=8192, repeats=10) -> float:
    """Measured dense matrix-multiply rate in FLOP/s: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def step_flops(size, batch, sharp=True) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from medrun.models.sharp_unet import SharpUNet

    model = SharpUNet(3, 1, sharp=sharp)
    x = torch.rand(batch, 3, *size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().mean().backward()
    return counter.get_total_flops()


def gpu_throughput(size, batch, steps, warmup, device, quick: bool):
    rows = []
    rate = matmul_rate(device, n=1024 if quick else 8192, repeats=3 if quick else 10)
    rows.append((f"measured bf16 matmul rate on {device}, TFLOP/s", f"{rate / 1e12:.1f}"))
    variants = [("fp32", None, False, False), ("bf16-mixed", "bf16", False, False),
                ("bf16-mixed + channels_last", "bf16", True, False), ("bf16-mixed + torch.compile", "bf16", False, True)]
    for sharp in (True, False):
        flops = step_flops(size, batch, sharp)
        for name, precision, cl, comp in variants:
            if device != "cuda" and comp and not quick:
                continue
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = _hand_steps(size, batch, steps, warmup, 0, device=device, precision=precision, channels_last=cl,
                                compile=comp and device == "cuda", sharp=sharp)
            step = statistics.median(times)
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device == "cuda" else "n/a"
            rows.append((f"{'Sharp U-Net' if sharp else 'U-Net'} {size[0]}x{size[1]} {name}: images/s, peak GiB, MFU",
                         f"{batch / step:.1f}, {peak}, {flops / step / rate:.1%}"))
    return rows


def reproduction_time(device: str, quick: bool):
    """Wall time of a full 5-fold sharp_unet_isbi run at the paper's settings (tiny settings with --quick)."""
    import medrun

    root = SHARED / "isbi2012"
    if not root.is_dir():
        return [("5-fold sharp_unet_isbi", f"skipped: {root} missing")]
    extra = (["trainer.max_epochs=1", "data.image_size=[32,32]", "model.filters=[4,8,16,32,64]"] if quick
             else ["trainer=gpu", "trainer.precision=32-true"] if device == "cuda" else [])
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"medrun-bench-repro-{os.getpid()}"
    cfg = medrun.compose("train", ["experiment=sharp_unet_isbi", f"data.root={root}", "logger=none",
                                   "callbacks.progress=none", f"paths.output_dir={out}", *extra])
    t = time.perf_counter()
    _, summary = medrun.train(cfg)
    minutes = (time.perf_counter() - t) / 60
    return [(f"5-fold sharp_unet_isbi ({' '.join(extra) or 'paper settings'}): minutes, mean Dice",
             f"{minutes:.1f}, {summary['mean']['dice']:.4f} ± {summary['std']['dice']:.4f}")]


# ---------------------------------------------------------------- table
def versions() -> str:
    import albumentations
    import pytorch_lightning
    import segmentation_models_pytorch

    return (f"python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning "
            f"{pytorch_lightning.__version__}, smp {segmentation_models_pytorch.__version__}, albumentations "
            f"{albumentations.__version__}")


def _pss_mb(pid: int) -> float:
    """Proportional set size: shared pages count once across processes (RSS would count them per process)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def first_step_rows(label: str, run: list[str], quick: bool) -> list[tuple[str, str]]:
    """Seconds from medrun.train() to its first training step (same process, imports done, after a warm-up
    run unless `quick`): data.cache=memory, then disk building its cache, then disk reusing it; and the last
    two's ratio."""
    import medrun
    from medrun.tasks.segmentation import SegmentationTask

    seen, rows = {}, []
    step = SegmentationTask.training_step

    def first_step(self, batch, batch_idx):
        seen.setdefault("t", time.perf_counter())
        return step(self, batch, batch_idx)

    SegmentationTask.training_step = first_step
    try:
        if not quick:
            medrun.train(medrun.compose("train", [*run, "data.cache=off"]))  # warm-up: first-call costs, unrecorded
        for name, mode in (("memory (decodes every run)", "memory"), ("disk, first run (builds)", "disk"),
                           ("disk, second run (reuses)", "disk")):
            seen.clear()
            t = time.perf_counter()
            medrun.train(medrun.compose("train", [*run, f"data.cache={mode}"]))
            rows.append((f"{label}: time to the first training step, data.cache={name}, s", f"{seen['t'] - t:.2f}"))
    finally:
        SegmentationTask.training_step = step
    first, second = (float(v) for _, v in rows[-2:])
    return rows + [(f"{label}: second run / first run, data.cache=disk", f"{second / first:.1%}")]


def cache_rows(quick: bool):
    """Decode once and share (data.cache): parallel decode, first vs second run, loader-worker memory, and
    MONAI's PersistentDataset / CacheDataset on the same decode + resize."""
    import shutil
    import tempfile

    from monai.data import CacheDataset, PersistentDataset
    from monai.transforms import Lambda

    import medrun
    from medrun.data import build_dataset
    from medrun.data.build import build_store
    from medrun.data.datamodule import FoldDataModule

    root = SHARED / "busi_siim"
    if not root.is_dir():
        return [("BUSI (SIIM layout)", f"skipped: {root} missing")]
    size = 64 if quick else 256
    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="medrun-bench-cache-"))
    base = ["experiment=cascade_busi", f"data.root={root}", f"data.image_size=[{size},{size}]",
            f"paths.cache_dir={tmp / 'medrun'}"]
    label = f"BUSI, 267 DICOM + RLE, {size}x{size}"
    rows = []
    try:
        store = build_store(medrun.compose("train", base), preload=False)
        n = len(store)
        for workers in [cores] if quick else sorted({1, cores}):
            rates = []
            for _ in range(1 if quick else 3):
                fresh = build_store(medrun.compose("train", base), preload=False)
                t = time.perf_counter()
                fresh.preload(workers)
                rates.append(n / (time.perf_counter() - t))
            rows.append((f"{label}: preload into memory, decode_workers={workers}, samples/s", spread(rates)))
        for workers in sorted({1, cores}):
            rates = []
            for k in range(1 if quick else 3):
                cfg = medrun.compose("train", [*base, "data.cache=disk", f"data.decode_workers={workers}",
                                               f"paths.cache_dir={tmp / f'build_{workers}_{k}'}"])
                t = time.perf_counter()
                build_store(cfg)
                rates.append(n / (time.perf_counter() - t))
            rows.append((f"{label}: build the disk cache (list + decode + write + checksum), decode_workers={workers},"
                         " samples/s", spread(rates)))

        # time from medrun.train() to its first training step (same process, imports done): cold cache, warm cache
        tiny = ["model.filters=[8,16,32,64,128]", "cv=holdout", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                "+trainer.limit_val_batches=1", "logger=none", "callbacks.progress=none",
                f"data.decode_workers={cores}", f"paths.output_dir={tmp / 'runs'}"]
        rows += first_step_rows(label, ["data=busi_siim", *base[1:], *tiny], quick)
        others = (("CVC-ClinicDB TIFF", "cvc_clinicdb", "cvc_clinicdb_sample/CVC-ClinicDB", "[192,256]"),
                  ("ISBI-2012 PNG", "isbi2012", "isbi2012", f"[{size},{size}]"))
        for name, data, folder, shape in () if quick else others:  # --quick: BUSI stands for every reader
            rows += first_step_rows(f"{name}, {shape}", [f"data={data}", f"data.root={SHARED / folder}",
                                                         f"data.image_size={shape}", *tiny,
                                                         f"paths.cache_dir={tmp / data}"], quick=False)

        # memory of the loader: this process plus its workers, proportional set size, while a pass is under way
        for mode in ("disk",) if quick else ("memory", "disk"):
            cfg = medrun.compose("train", [*base, f"data.cache={mode}", "data.batched=false", "data.batch_size=8"])
            st = build_store(cfg)
            ids = [s.id for s in st.samples]
            for workers in (0, 2):
                cfg.data.num_workers = workers
                loader = FoldDataModule(st, {"train": ids, "val": ids, "test": ids}, cfg.data, 0).train_dataloader()
                peak = 0.0
                for _ in range(2):  # the second pass: every worker has read every sample once
                    for k, _batch in enumerate(loader):
                        if k % 5 == 0:
                            peak = max(peak, _pss_mb(os.getpid()) + sum(_pss_mb(c) for c in _children(os.getpid())))
                rows.append((f"{label}: loader memory (PSS of the process and its workers), data.cache={mode}, "
                             f"num_workers={workers}, MB", f"{peak:.0f}"))
                del loader
            del st

        # MONAI on the same decode + resize
        decode = Lambda(lambda i: store.decode(int(i)))
        items = list(range(n))
        for k in (1, 2):
            ds = PersistentDataset(items, transform=decode, cache_dir=tmp / "monai_persistent")
            t = time.perf_counter()
            for i in range(n):
                ds[i]
            rows.append((f"{label}: MONAI PersistentDataset, {'first' if k == 1 else 'second'} pass over a "
                         "new instance, s", f"{time.perf_counter() - t:.2f}"))
        for workers in sorted({1, cores}):
            t = time.perf_counter()
            CacheDataset(items, transform=decode, num_workers=workers, progress=False)
            rows.append((f"{label}: MONAI CacheDataset fill (every run), num_workers={workers}, s",
                         f"{time.perf_counter() - t:.2f}"))
        for k in (1, 2):
            cfg = medrun.compose("train", [*base, "data.cache=disk", f"data.decode_workers={cores}",
                                           f"paths.cache_dir={tmp / 'beside_monai'}"])
            t = time.perf_counter()  # list (or read the stored listing), decode or open the arrays
            build_store(cfg)
            rows.append((f"{label}: medrun data.cache=disk, {'first (builds)' if k == 1 else 'second (reuses)'} "
                         "build_store, s", f"{time.perf_counter() - t:.2f}"))
        cfg = medrun.compose("train", base)
        t = time.perf_counter()
        build_dataset(cfg.data)
        rows.append((f"{label}: of which listing the dataset (the reader: DICOM headers, RLE table), s",
                     f"{time.perf_counter() - t:.2f}"))
        reused = build_store(medrun.compose("train", [*base, "data.cache=disk"]), preload=False)
        t = time.perf_counter()
        for i in range(n):
            reused.get(i)
        rows.append((f"{label}: medrun data.cache=disk, a pass over every sample of the reused cache, s",
                     f"{time.perf_counter() - t:.2f}"))
        rows.append((f"{label}: disk used, medrun cache / MONAI PersistentDataset, MB",
                     f"{sum(f.stat().st_size for f in (tmp / 'beside_monai').rglob('*') if f.is_file()) / 2**20:.1f} / "
                     f"{sum(f.stat().st_size for f in (tmp / 'monai_persistent').rglob('*') if f.is_file()) / 2**20:.1f}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def write_dicom_set(root: Path, n: int, side: int = 1024) -> None:
    """A SIIM-layout set of `n` generated 12-bit `side`x`side` DICOMs (from a real BUSI file's header) with an
    RLE table, one in four with a square mask."""
    import pydicom
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(next((SHARED / "busi_siim" / "dicom-images-train").rglob("*.dcm")))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    rows = ["ImageId, EncodedPixels"]
    for k in range(n):
        uid = generate_uid()
        pixels = ((np.sin(xx / (40 + k % 17)) + np.cos(yy / (30 + k % 13)) + 2) * 1000
                  + rng.integers(0, 96, (side, side))).astype(np.uint16)
        ds = template.copy()
        ds.Rows, ds.Columns = side, side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        for tag in ("PlanarConfiguration", "WindowCenter", "WindowWidth"):
            if tag in ds:
                delattr(ds, tag)
        ds.PixelData = pixels.tobytes()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.PatientID = f"GEN-{k // 2:05d}"
        folder = root / "dicom-images-train" / uid / uid
        folder.mkdir(parents=True)
        ds.save_as(folder / f"{uid}.dcm")
        start = (k * 7919) % (side * side - side * 64)
        rows.append(f"{uid}, {start} {side * 8}" if k % 4 == 0 else f"{uid}, -1")
    (root / "train-rle.csv").write_text("\n".join(rows) + "\n")


def large_dicom_rows(quick: bool):
    """Time to the first training step on a generated SIIM-sized set: first run (decodes and builds the disk
    cache) vs a second run (reuses it), and the same with data.cache=memory."""
    import shutil
    import tempfile

    n, side = (12, 128) if quick else (2000, 1024)
    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="medrun-bench-dicom-"))
    label = f"generated SIIM layout, {n} DICOMs of {side}x{side}, 12-bit, to 256x256, decode_workers={cores}"
    try:
        t = time.perf_counter()
        write_dicom_set(tmp / "data", n, side)
        rows = [(f"{label}: writing the set (not part of a run), s", f"{time.perf_counter() - t:.1f}")]
        run = ["data=siim_acr", f"data.root={tmp / 'data'}", "data.image_size=[256,256]", "data.channels=1",
               "model.filters=[8,16,32,64,128]", "cv=holdout", "trainer.max_epochs=1",
               "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1", "logger=none",
               "callbacks.progress=none", f"data.decode_workers={cores}", f"paths.cache_dir={tmp / 'cache'}",
               f"paths.output_dir={tmp / 'runs'}"]
        return rows + first_step_rows(label, run, quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def previous_values(path: Path) -> tuple[str, dict]:
    """(date, {measurement: value}) of the table a new run replaces, to show the two side by side."""
    if not path.is_file():
        return "", {}
    text = path.read_text()
    date = next((ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("- date: ")), "")
    rows = (ln.strip("|").split(" | ") for ln in text.splitlines() if ln.startswith("| ") and " | " in ln)
    return date, {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2 and r[0].strip() != "measurement"}


def merge_section(path: Path, sections: dict, command: str) -> None:
    """Replace (or add) these sections inside an existing table, noting when and how they were re-measured."""
    text = path.read_text()
    for title, rows in sections.items():
        block = "\n".join([f"## {title}", "", f"Re-measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
                           f"by `{command}` ({platform.machine()}, {os.cpu_count()} CPU cores).", "",
                           "| measurement | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""])
        start = text.find(f"## {title}\n")
        if start < 0:
            text = text.rstrip("\n") + "\n\n" + block
        else:
            end = text.find("\n## ", start + 1)
            text = text[:start] + block + (text[end:] if end >= 0 else "")
    path.write_text(text)


def write_table(path: Path, sections: dict, command: str, device: str) -> None:
    date, before = previous_values(path)
    lines = [f"# medrun benchmark: {path.stem}", "",
             f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, device {device}"
             + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""),
             f"- versions: {versions()}", f"- command: `{command}`",
             "- figures: median (min, max, number of repeats), or median (interquartile range, n)"]
    if before:
        lines.append(f"- previous: the table this run replaced ({date}; the same kind of machine, not the same "
                     "one: compare ratios within a column, not absolute times across columns)")
    lines.append("")
    for title, rows in sections.items():
        if before:
            lines += [f"## {title}", "", f"| measurement | value | previous ({date}) |", "|---|---|---|"]
            lines += [f"| {k} | {v} | {before.get(k, '-')} |" for k, v in rows]
        else:
            lines += [f"## {title}", "", "| measurement | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in rows]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    ap.add_argument("--gpu", action="store_true", help="also the GPU section (CUDA if available)")
    ap.add_argument("--name", default="cpu")
    ap.add_argument("--out", default=str(REPO / "benchmarks"))
    ap.add_argument("--only", choices=["overhead", "data", "evaluation", "allocator", "cascade", "explain", "gan",
                                       "cache", "dicom"],
                    help="one section only (written to benchmarks/<name>_<section>.md)")
    ap.add_argument("--merge", action="store_true", help="with --only: replace that section in <name>.md instead")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    q = args.quick
    size, batch = ((32, 32), 2) if q else ((96, 128), 8)
    steps, warmup = (3, 1) if q else (30, 3)
    builders = {
        "overhead": (f"Training step, Sharp U-Net {size[0]}x{size[1]}x3, batch {batch}, fp32, CPU, interleaved",
                     lambda: training_overhead(size, batch, steps, warmup)),
        "data": ("Data pipeline (real files from ../shared/data)", lambda: data_pipeline(q)),
        "evaluation": ("Evaluation", lambda: evaluation(q)),
        "allocator": ("Inference memory allocator (glibc malloc, CPU)", lambda: allocator_rows(q)),
        "cascade": ("Cascade evaluation (One Case): what the classifier adds", lambda: cascade_evaluation(q)),
        "explain": ("Explanation (CPU)", lambda: explanation(q)),
        "gan": ("CycleGAN oversampling (MelaNet)", lambda: gan_rate(q)),
        "cache": ("Decode once and share (data.cache, real BUSI DICOMs)", lambda: cache_rows(q)),
        "dicom": ("Decode once and share at scale (data.cache, generated SIIM-sized DICOMs)",
                  lambda: large_dicom_rows(q)),
    }
    chosen = [args.only] if args.only else list(builders)
    sections = {builders[k][0]: builders[k][1]() for k in chosen}
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    command = " ".join(["python scripts/bench.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out) / f"{args.name}.md"
    if args.only and args.merge and out.is_file():
        merge_section(out, sections, command)
        print(out.read_text())
        return out
    if args.only:
        args.name = f"{args.name}_{args.only}"
    elif args.gpu:
        gsize, gbatch = ((32, 32), 2) if q or device == "cpu" else ((192, 256), 16)
        sections[f"Throughput on {device}, {gsize[0]}x{gsize[1]}, batch {gbatch}"] = gpu_throughput(
            gsize, gbatch, steps, warmup, device, q) + reproduction_time(device, q or device == "cpu")
    out = Path(args.out) / f"{args.name}.md"
    write_table(out, sections, command, device)
    print(out.read_text())
    return out


if __name__ == "__main__":
    main()
