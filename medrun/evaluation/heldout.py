"""Score a trained segmentation model on held-out samples and save its predictions by sample id."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medrun.evaluation.metrics import confusion, per_image, scores
from medrun.runs import write_text


def write_per_image(pred_dir: Path, ids: list[str], each: dict[str, torch.Tensor], **columns) -> None:
    """predictions/per_image.csv: each held-out image's Dice and Jaccard (and `columns`, one value per image),
    for the report's Dice distribution and its worst / median / best montage."""
    names = ["dice", "jaccard", *columns]
    values = [each["dice"].tolist(), each["jaccard"].tolist(), *(list(v) for v in columns.values())]
    write_text(pred_dir / "per_image.csv", ",".join(["id", *names]) + "\n" + "".join(
        ",".join([sid, *(f"{float(v[k]):.6f}" for v in values)]) + "\n" for k, sid in enumerate(ids)))


def evaluate_segmentation(task, loader, sample_ids: list[str], pred_dir: Path | None,
                          save_probabilities: bool = True, device: str | torch.device = "cpu") -> dict[str, float]:
    """Dataset metrics over `loader`; writes `<id>.png` masks (and `<id>.npy` float16 probabilities)."""
    counts, ids = [], []
    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    for probs, batch in task.iter_probabilities(loader, device):
        counts.append(confusion(probs, batch["target"], task.binary, task.val_scores.threshold))
        if pred_dir is None:
            continue
        if task.binary:
            masks = (probs[:, 0] >= task.val_scores.threshold).to(torch.uint8) * 255
            maps = probs[:, 0]
        else:
            masks, maps = probs.argmax(1).to(torch.uint8), probs
        for i, idx in enumerate(batch["index"].tolist()):
            sid = sample_ids[idx]
            ids.append(sid)
            Image.fromarray(masks[i].numpy()).save(pred_dir / f"{sid}.png")
            if save_probabilities:
                np.save(pred_dir / f"{sid}.npy", maps[i].numpy().astype(np.float16))
    tp, fp, fn, tn = (torch.cat(c) for c in zip(*counts))
    if pred_dir is not None:
        write_per_image(pred_dir, ids, per_image(tp, fp, fn, tn, task.val_scores.empty_score, task.val_scores.absent))
    return scores(tp, fp, fn, tn, task.class_names, task.val_scores.empty_score, task.val_scores.absent)
