"""What each row of a paper table costs to train at the paper's settings: `medrun reproduce TABLE estimate=true`.

The training FLOPs of one image are counted on the row's own network (Lightning's measure_flops, forward and
backward, on the meta device: nothing is computed); the CPU seconds of one image are measured here, from training
steps of that network on random input (machine- and load-dependent); GPU minutes divide the FLOPs by an assumed
sustained rate of one H100 (ASSUMED_GPU_RATE), not a measurement. Both count training steps only (validation,
testing and any oversampling GAN come on top) and every epoch (early stopping can only shorten a run)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from lightning_fabric.utilities.throughput import measure_flops

from medrun.config import compose, to_plain
from medrun.crossval import check_input_size
from medrun.errors import MedrunError
from medrun.models.pretrained import without_weights
from medrun.reproduce.command import REFERENCE, plan
from medrun.reproduce.tables import load_table
from medrun.tasks.base import TASKS

# NVIDIA's H100 SXM datasheet: 989 TFLOP/s dense bf16; 35 % of it sustained is an assumption for CNN training
ASSUMED_GPU_RATE = 0.35 * 989e12
PER_IMAGES = 1000  # without the data: the cost per this many training images


def _network(cfg) -> torch.nn.Module:
    config = to_plain(cfg)
    config["model"] = without_weights(config["model"])  # weights change no cost, and may not be here
    # classes read from a data folder that is not here: two stand-ins (the head's size hardly counts)
    named = [str(config["task"]["train_class"])] if config["task"].get("train_class") else []  # a GAN's class
    config["data"]["classes"] = config["data"].get("classes") or [*named, "class_0", "class_1"][:2]
    return TASKS.get(cfg.task.name)(config).net


def _loss(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A stand-in loss through every network the task trains (a GAN: the generator and the discriminator)."""
    loss = net(x).float().mean()
    if hasattr(net, "generate"):
        loss = loss + net(net.generate(x)).float().mean()
    return loss


def _input(cfg, batch: int, device: str = "cpu") -> torch.Tensor:
    return torch.rand(batch, int(cfg.data.channels), *(int(v) for v in cfg.data.image_size), device=device)


def image_flops(cfg) -> float:
    """Training FLOPs of one image (forward and backward), counted without computing."""
    with torch.device("meta"):
        net = _network(cfg).train()
        x = _input(cfg, 2, "meta")
        return measure_flops(net, lambda: _loss(net, x), lambda loss: loss) / 2


def image_seconds(cfg, target_s: float = 5.0) -> float:
    """CPU seconds of one image in a training step of the row's network, at a batch (up to the row's) that takes
    about `target_s`, after a warm-up step at that batch. Wall time: measure on an otherwise idle machine."""
    net = _network(cfg).train()

    def step(batch: int) -> float:
        x = _input(cfg, batch)
        start = time.perf_counter()
        _loss(net, x).backward()
        net.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / batch

    step(2)  # the first call at a shape sets up its kernels
    warm = step(2)
    batch = max(2, min(int(cfg.data.batch_size), round(target_s / warm)))
    if batch == 2:
        return warm
    step(batch)
    return step(batch)


def trainings(cfg) -> int:
    """Networks trained by the row's protocol: folds x repeats."""
    folds = int(cfg.cv.get("folds") or 1) if "kfold" in str(cfg.cv.name) else 1
    return folds * int(cfg.cv.get("repeats") or 1)


def training_images(cfg) -> int:
    """Images in the first fold's training part, from the data (listing and split only; no image is decoded)."""
    from medrun.data.build import build_splits, build_store

    return len(build_splits(cfg, build_store(cfg, preload=False))["folds"][0]["train"])


def estimate(table_name: str, inputs: dict | None = None) -> list[dict]:
    """Per row and protocol: trainings, epochs, training images (None without the data), FLOPs and seconds per
    image, and the totals (CPU hours here, GPU minutes at ASSUMED_GPU_RATE) for those images or per PER_IMAGES."""
    table = load_table(table_name)
    rows, measured = [], {}
    with tempfile.TemporaryDirectory() as out:
        jobs = plan(table, dict(inputs or {}), False, list(table.protocols), Path(out))
    for job in jobs:
        if job["status"] == REFERENCE:
            continue
        held = "overrides" in job
        cfg = compose("train", job["overrides"] if held else job["settings"], required=False)
        key = (repr(to_plain(cfg.model)), tuple(cfg.data.image_size), int(cfg.data.channels), cfg.task.name)
        try:
            check_input_size(cfg)
            if key not in measured:
                measured[key] = (image_flops(cfg), image_seconds(cfg))
            images = training_images(cfg) if held else None
        except MedrunError as e:
            rows.append({"row": job["row"], "protocol": job["protocol"], "error": str(e)})
            continue
        flops, seconds = measured[key]
        n = trainings(cfg) * int(cfg.trainer.max_epochs) * (images or PER_IMAGES)
        rows.append({"row": job["row"], "protocol": job["protocol"], "trainings": trainings(cfg),
                     "epochs": int(cfg.trainer.max_epochs), "training_images": images,
                     "image_size": list(cfg.data.image_size), "gflops_per_image": flops / 1e9,
                     "cpu_ms_per_image": 1e3 * seconds, "cpu_hours": n * seconds / 3600,
                     "gpu_minutes": n * flops / ASSUMED_GPU_RATE / 60, "status": job["status"]})
    return rows


def markdown(table_name: str, rows: list[dict]) -> str:
    """The estimate as a table, with what it assumes."""
    lines = [f"# Training cost of {table_name} at the paper's settings", "",
             f"CPU hours from training steps measured on this machine ({torch.get_num_threads()} threads); GPU minutes "
             f"from the counted FLOPs at an assumed {ASSUMED_GPU_RATE / 1e12:.0f} TFLOP/s (35 % of one H100's dense "
             "bf16 peak), not measured. Training steps only, every epoch; rows without their data here are per "
             f"{PER_IMAGES:,} training images.", "",
             "| row | protocol | trainings x epochs | training images | GFLOP / image | CPU ms / image | CPU hours | "
             "GPU minutes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['protocol']} | {r['error']} | | | | | |")
            continue
        per = "" if r["training_images"] else f" per {PER_IMAGES:,} images"
        lines.append(f"| {r['row']} | {r['protocol']} | {r['trainings']} x {r['epochs']} | "
                     f"{r['training_images'] or '-'} | {r['gflops_per_image']:.2f} | {r['cpu_ms_per_image']:.1f} | "
                     f"{r['cpu_hours']:.2f}{per} | {r['gpu_minutes']:.2f}{per} |")
    return "\n".join(lines) + "\n"
