"""Score a trained segmentation model on held-out samples and save its predictions by sample id."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medrun.evaluation.metrics import confusion, scores


def evaluate_segmentation(task, loader, sample_ids: list[str], pred_dir: Path | None,
                          save_probabilities: bool = True, device: str | torch.device = "cpu") -> dict[str, float]:
    """Dataset metrics over `loader`; writes `<id>.png` masks (and `<id>.npy` float16 probabilities)."""
    counts = []
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
            Image.fromarray(masks[i].numpy()).save(pred_dir / f"{sid}.png")
            if save_probabilities:
                np.save(pred_dir / f"{sid}.npy", maps[i].numpy().astype(np.float16))
    tp, fp, fn, tn = (torch.cat(c) for c in zip(*counts))
    return scores(tp, fp, fn, tn, task.class_names, task.val_scores.empty_score, task.val_scores.absent)
