"""The segmentation LightningModule: sigmoid (binary) or softmax (multi-class) masks."""
from __future__ import annotations

import csv

import numpy as np
import torch

from medrun.evaluation import overlays
from medrun.evaluation.decision import Decision
from medrun.evaluation.heldout import evaluate_segmentation
from medrun.evaluation.intervals import image_resampler
from medrun.evaluation.metrics import SegmentationScores, confusion, per_image, scores
from medrun.evaluation.trivial import segmentation_baselines
from medrun.evaluation.reports import POSTPROCESSING_COLUMNS, table_markdown, table_over_folds
from medrun.evaluation.thresholds import search_pixel_threshold
from medrun.runs import fold_records
from medrun.tasks.base import TASKS, ConfiguredTask
from medrun.tasks.segmentation_losses import build_loss


ALL_EMPTY = "all-empty (reference, not a method)"


@TASKS.register("segmentation")
class SegmentationTask(ConfiguredTask):
    spatial = True
    summary_tables = ("postprocessing_table",)

    def __init__(self, config: dict):
        classes = list(config["data"]["classes"])
        self.class_names, self.binary = classes, len(classes) == 2
        super().__init__(config, self.output_channels(len(classes)))
        self.loss = build_loss(self.cfg.task.loss, self.binary)
        self.val_scores = SegmentationScores(classes, float(self.cfg.task.threshold), float(self.cfg.task.empty_score),
                                             str(self.cfg.task.get("absent_classes", "ignore")))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)

    def validation_scores(self, probs, target):
        self.val_scores.update(probs, target)

    @classmethod
    def serving_meaning(cls, cfg) -> str:
        if len(cfg.data.classes) == 2:
            return "(N, 1, H, W) foreground probability per pixel (sigmoid); mask = probability >= threshold"
        return "(N, C, H, W) class probabilities per pixel (softmax); mask = argmax over C"

    def on_validation_epoch_end(self):
        values = self.val_scores.compute()
        self.val_scores.reset()
        # Already synchronised by the metric; sync_dist only keeps Lightning from warning under DDP.
        self.log("val/jaccard", values.pop("jaccard"), prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=True)

    def evaluate_heldout(self, datamodule, sample_ids: list[str], out_dir, device, save_probabilities=True):
        """Metrics on the fold's test part; writes predictions/<id>.png (and .npy probabilities). With
        task.table=true (binary), also the post-processing rows ArgMax / Raw / searched threshold / TTA, searched on
        the fold's validation part (the cascade's baseline in Table 5.1)."""
        metrics = self._scores(datamodule.test_dataloader(), device, sample_ids, out_dir / "predictions",
                               save_probabilities)
        if not (self.cfg.task.get("table") and self.binary):
            return metrics, {}
        return metrics, self.postprocessing_table(datamodule, device)

    def validation_metrics(self, datamodule, device) -> dict[str, float]:
        return self._scores(datamodule.val_dataloader(), device)

    def _scores(self, loader, device, sample_ids=(), pred_dir=None, save_probabilities=True) -> dict[str, float]:
        task = self.cfg.task
        return evaluate_segmentation(self.iter_probabilities(loader, device), Decision.of_run(self.cfg),
                                     self.class_names, list(sample_ids), pred_dir, save_probabilities,
                                     float(task.empty_score), str(task.get("absent_classes", "ignore")))

    def postprocessing_table(self, datamodule, device) -> dict:
        """{"table": rows x (Dice, dataset Dice, IoU), "postprocessing": the search} for one fold."""
        task = self.cfg.task
        v_probs, v_target, _ = self.collect_probabilities(datamodule.val_dataloader(), device)
        v_maps = v_probs[:, 0]
        found = search_pixel_threshold(v_maps, v_target, min_areas=tuple(task.get("min_areas") or (0,)),
                                       empty_score=float(task.empty_score))
        probs, target, _ = self.collect_probabilities(datamodule.test_dataloader(), device)
        maps = probs[:, 0]
        raw = search_pixel_threshold(v_maps, v_target, empty_score=float(task.empty_score))  # the thesis' "Raw"
        fixed = Decision.of_run(self.cfg)
        searched, raw_decision = fixed.but(threshold=found["threshold"], min_area=found["min_area"]), fixed.but(
            threshold=raw["threshold"])
        rows = {"ArgMax": fixed.masks(maps), "Raw": raw_decision.masks(maps), "searched threshold": searched.masks(maps)}
        tta = str(task.get("tta") or "flips")
        if tta != "none":
            a_maps = self.collect_probabilities(datamodule.test_dataloader(), device, tta)[0][:, 0]
            rows[f"TTA ({tta})"] = searched.masks(a_maps)
            rows[f"TTA ({tta}), Raw threshold"] = raw_decision.masks(a_maps)
        rows[ALL_EMPTY] = torch.zeros_like(rows["ArgMax"])  # a reference row: what predicting nothing scores
        table = {}
        for name, masks in rows.items():
            s = scores(*confusion(masks[:, None].float(), target, True), self.class_names, float(task.empty_score))
            table[name] = {k: s[k] for k in POSTPROCESSING_COLUMNS if k in s}
        return {"table": table, "postprocessing": found, "postprocessing_raw": raw}

    @classmethod
    def finish_run(cls, cfg, run_dir, splits) -> dict:
        """With task.table: the post-processing rows over folds (cv_summary["postprocessing_table"])."""
        if not cfg.task.get("table"):
            return {}
        records = fold_records(run_dir, splits)
        if not all("table" in r for r in records):
            return {}
        return {"postprocessing_table": table_over_folds([r["table"] for r in records])}

    @classmethod
    def trivial_rows(cls, cfg, store, fold: dict) -> dict[str, dict[str, float]]:
        """All-empty and all-foreground masks on the fold's test part."""
        return segmentation_baselines(cls.test_targets(store, fold), [str(c) for c in cfg.data.classes], float(cfg.task.empty_score),
                                      str(cfg.task.get("absent_classes", "ignore")))

    @classmethod
    def summary_markdown(cls, summary: dict) -> str:
        if "postprocessing_table" not in summary:
            return ""
        return table_markdown(summary["postprocessing_table"], "Post-processing on the test parts (mean ± std over folds)",
                              "Threshold and minimum area searched on each fold's validation part.")

    @classmethod
    def output_channels(cls, n_classes: int) -> int:
        return 1 if n_classes == 2 else n_classes  # binary: one sigmoid map

    @classmethod
    def mask_from_probabilities(cls, probs: np.ndarray, decision: Decision) -> tuple[np.ndarray, np.ndarray]:
        """predict's mask (uint8: 0/255 when binary, class indices otherwise) and the probabilities it keeps,
        from (C, H, W) probabilities at the input's size."""
        if probs.shape[0] > 1:
            return probs.argmax(0).astype(np.uint8), probs
        return decision.mask(probs[0]).astype(np.uint8) * 255, probs[0]

    @classmethod
    def searchable(cls, cfg) -> bool:
        """Whether eval's threshold search applies: binary masks."""
        return len(cfg.data.classes) == 2

    @classmethod
    def evaluate_predictions(cls, cfg, out_dir, store, search, evaluation, ids, folds, *, tta, threshold,
                             objective, target_sensitivity, min_areas):
        """eval's rows (ArgMax / searched threshold and min-area / TTA), per_sample.csv and overlays."""
        classes = [str(c) for c in cfg.data.classes]
        binary = len(classes) == 2
        empty = float(cfg.task.empty_score)
        # min_area counts pixels at the model's input size (data.image_size); predict scales it to each input
        decision, extra = Decision.of_run(cfg, tta), {}
        if threshold == "search":
            found = search_pixel_threshold(search[0][:, 0], search[1], min_areas=tuple(min_areas), empty_score=empty)
            decision, extra = decision.but(threshold=found["threshold"], min_area=found["min_area"]), {
                "search_dice": found["dice"]}
        plain, augmented, target = evaluation

        absent = str(cfg.task.get("absent_classes", "ignore"))

        def score(probs, d):
            pred = d.masks(probs[:, 0]).float()[:, None] if binary else probs
            counts = confusion(pred, target, binary)
            return scores(*counts, classes, empty, absent), per_image(*counts, empty, absent), counts

        rows = {"argmax": score(plain, Decision())}
        if threshold == "search":
            rows["threshold"] = score(plain, decision)
        if tta != "none":
            rows["tta"] = score(augmented, decision)
        final = list(rows)[-1]
        per = rows[final][1]
        with open(out_dir / "per_sample.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "fold", "predicted_fraction", "dice", "jaccard"])
            probs = augmented if final == "tta" else plain
            pred = decision.masks(probs[:, 0]) if binary else probs.argmax(1) > 0
            for i, sid in enumerate(ids):
                w.writerow([sid, folds[i], f"{pred[i].float().mean():.6f}", f"{per['dice'][i]:.6f}", f"{per['jaccard'][i]:.6f}"])
        order = np.argsort(per["dice"].cpu().numpy(), kind="stable")
        picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
        probs = augmented if final == "tta" else plain
        pred = decision.masks(probs[:, 0]).long() if binary else probs.argmax(1)
        for name, i in picks.items():
            image, _ = store.get(store.index[ids[i]])
            overlays.save(out_dir / f"overlay_{name}.png", image, target[i].cpu().numpy(), pred[i].cpu().numpy(),
                          f"{name}: {ids[i]} (Dice {per['dice'][i]:.3f})")
        counts = rows[final][2]
        return {"rows": {k: v[0] for k, v in rows.items()}, "postprocessing": {**decision.stored(), **extra},
                "overlays": {k: ids[i] for k, i in picks.items()},
                "resample": image_resampler(counts, classes, empty, absent)}
