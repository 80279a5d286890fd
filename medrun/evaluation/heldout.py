"""Score segmentation probabilities on held-out samples with a decision, and save the predictions by sample id."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medrun.evaluation.decision import Decision
from medrun.evaluation.metrics import confusion, per_image, scores
from medrun.runs import write_text


def write_per_image(pred_dir: Path, ids: list[str], each: dict[str, torch.Tensor], **columns) -> None:
    """predictions/per_image.csv: each held-out image's Dice and Jaccard (and `columns`, one value per image),
    for the report's Dice distribution and its worst / median / best montage."""
    names = ["dice", "jaccard", *columns]
    values = [each["dice"].tolist(), each["jaccard"].tolist(), *(list(v) for v in columns.values())]
    write_text(pred_dir / "per_image.csv", ",".join(["id", *names]) + "\n" + "".join(
        ",".join([sid, *(f"{float(v[k]):.6f}" for v in values)]) + "\n" for k, sid in enumerate(ids)))


def evaluate_segmentation(probabilities, decision: Decision, class_names: list[str], sample_ids: list[str],
                          pred_dir: Path | None, save_probabilities: bool = True, empty_score: float = 1.0,
                          absent: str = "ignore") -> dict[str, float]:
    """Dataset metrics over `probabilities`, (probabilities, batch) pairs as a task's iter_probabilities yields
    them: binary masks by `decision`, else the argmax. Writes `<id>.png` masks (and `<id>.npy` float16
    probabilities) to `pred_dir` unless it is None."""
    counts, ids = [], []
    binary = len(class_names) == 2
    if pred_dir is not None:
        pred_dir.mkdir(parents=True, exist_ok=True)
    for probs, batch in probabilities:
        masks = decision.masks(probs[:, 0]) if binary else None
        counts.append(confusion(masks[:, None].float() if binary else probs, batch["target"], binary))
        if pred_dir is None:
            continue
        if binary:
            masks, maps = masks.to(torch.uint8) * 255, probs[:, 0]
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
        write_per_image(pred_dir, ids, per_image(tp, fp, fn, tn, empty_score, absent))
    return scores(tp, fp, fn, tn, class_names, empty_score, absent)
