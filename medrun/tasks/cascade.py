"""The "One Case" cascade (Zidan, pneumothorax): a classifier blanks the masks of a segmenter trained on
positive images only. Thresholds (pixel, minimum area, the classifier's decision) are searched on each
fold's validation part and applied unchanged to its test part; the same folds also give the segmenter alone
and the SIIM-ACR triplet rule, so the held-out table compares the three. The thesis' own rows are ArgMax (0.5),
Raw (the pixel threshold alone searched, the classifier at its default) and TTA with Raw's threshold; medrun's
joint search of all three thresholds and the minimum area gives the "searched threshold" rows beside them."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_lightning.callbacks import BaseFinetuning
from sklearn.metrics import recall_score, roc_auc_score
from omegaconf import OmegaConf
from torchmetrics import AUROC

from medrun.errors import MedrunError
from medrun.evaluation.heldout import write_per_image
from medrun.evaluation.decision import Decision
from medrun.evaluation.intervals import image_resampler
from medrun.evaluation.metrics import SegmentationScores, confusion, per_image, scores
from medrun.evaluation.postprocess import apply_triplet, scaled, search_cascade, search_triplet
from medrun.evaluation.reports import POSTPROCESSING_COLUMNS, table_markdown, table_over_folds
from medrun.evaluation.thresholds import search_pixel_threshold
from medrun.evaluation.trivial import segmentation_baselines
from medrun.runs import fold_records, require_run_dir, test_parts
from medrun.tasks.base import TASKS, ConfiguredTask
from medrun.tasks.classification_losses import build_classification_loss
from medrun.tasks.optim import build_optimization, manual_step
from medrun.tasks.segmentation import ALL_EMPTY
from medrun.tasks.segmentation_losses import build_loss


def classifier_scores(cls: torch.Tensor, decision: float, positive: torch.Tensor) -> dict[str, float]:
    """Sensitivity, specificity and AUC of "mask not empty", each left out where this set leaves it undefined
    (no positive or no negative image)."""
    score, y = cls.cpu().numpy(), positive.cpu().numpy().astype(int)
    pred = (score >= decision).astype(int)
    out = {"classifier_sensitivity": recall_score(y, pred, pos_label=1, zero_division=np.nan),
           "classifier_specificity": recall_score(y, pred, pos_label=0, zero_division=np.nan)}
    if 0 < y.sum() < len(y):
        out["classifier_auc"] = roc_auc_score(y, score)
    return {k: float(v) for k, v in out.items() if not np.isnan(v)}


def mask_scores(masks: torch.Tensor, target: torch.Tensor, cfg) -> tuple[dict[str, float], dict, tuple]:
    """Dice / IoU per image (empty on empty = empty_score) and dataset-level, from boolean masks (N, H, W), with
    the confusion counts (N, 1) they come from."""
    counts = confusion(masks.float()[:, None], target, True, 0.5)
    empty, absent = float(cfg.task.empty_score), str(cfg.task.get("absent_classes", "ignore"))
    return (scores(*counts, [str(c) for c in cfg.data.classes], empty, absent), per_image(*counts, empty, absent),
            counts)


TABLE_COLUMNS = tuple(POSTPROCESSING_COLUMNS)


CLASSIFIER_TRAIN_ON = ("fold", "whole_training_set_leaks")
SEGMENTER_PART = "segmenter_train"  # the training part's positive images: the segmenter's own batches


@TASKS.register("cascade")
class CascadeTask(ConfiguredTask):
    spatial = True
    summary_tables = ("table_5_1",)

    def __init__(self, config: dict):
        self.class_names = [str(c) for c in config["data"]["classes"]]
        super().__init__(config, 2)
        self.automatic_optimization = False  # two networks, two optimisers, two batches of different images
        task = self.cfg.task
        self.classifier_loss = build_classification_loss(task.classifier.loss, False, class_names=["empty", "mask"])
        self.segmenter_loss = build_loss(task.segmenter.loss, binary=True)
        self.val_scores = SegmentationScores(self.class_names, float(task.threshold), float(task.empty_score))
        self.val_auc = AUROC(task="binary")

    def training_split(self, store, fold: dict) -> dict:
        """The segmenter trains on batches of the training part's positive images (Section 4.4.2: the U-Net
        learns from positive images only; the validation part, stratified by mask presence, holds cv.val_fraction
        of the positives), the classifier on the whole training part. task.classifier.train_on=
        whole_training_set_leaks (the thesis): the classifier trains on every image of the fold, its validation
        and test parts included; the segmenter still on the training part's positives only."""
        train_on = str(self.cfg.task.classifier.get("train_on", "fold"))
        if train_on not in CLASSIFIER_TRAIN_ON:
            raise MedrunError(f"task.classifier.train_on={train_on!r}; valid: {', '.join(CLASSIFIER_TRAIN_ON)}")
        positives = [i for i, k in zip(fold["train"], store.indices(fold["train"])) if store.get(k)[1].any()]
        if not positives:
            raise MedrunError(f"fold {fold['fold']}: its training part has no image with a mask, so the segmenter has "
                              "nothing to learn from; use more images with masks or fewer folds (cv.folds)")
        classifier = fold["train"] if train_on == "fold" else [*fold["train"], *fold["val"], *fold["test"]]
        return {**fold, "train": classifier, SEGMENTER_PART: positives, "streams": [SEGMENTER_PART]}

    @classmethod
    def leak_note(cls, cfg) -> str | None:
        if str(cfg.task.classifier.get("train_on", "fold")) == "whole_training_set_leaks":
            return ("the classifier trained on each fold's validation and test images too "
                    "(task.classifier.train_on=whole_training_set_leaks, the thesis' choice)")
        return None

    @classmethod
    def output_channels(cls, n_classes: int) -> int:
        return 2  # the segmenter's map and the classifier's broadcast logit

    @classmethod
    def searchable(cls, cfg) -> bool:
        return True

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W): foreground probability, and the classifier's probability of "mask not empty"."""
        return torch.sigmoid(logits)

    def serving_output(self, probs: torch.Tensor, decision: Decision) -> torch.Tensor:
        """The blanking inside the exported graph: channel 0 is zero where the classifier says "empty"."""
        keep = probs[:, 1:2].mean(dim=(2, 3), keepdim=True) >= decision.decision_threshold
        return torch.cat([probs[:, :1] * keep, probs[:, 1:]], dim=1)

    @classmethod
    def serving_meaning(cls, cfg) -> str:
        return ("(N, 2, H, W): channel 0 the segmenter's foreground probability, set to 0 in images whose "
                "classifier probability is below decision_threshold (the cascade's blanking, inside the graph); "
                "channel 1 the classifier's probability that the mask is not empty")

    def configure_optimizers(self):
        out = []
        for name in ("classifier", "segmenter"):
            stage = self.cfg.task[name]
            scheduler = OmegaConf.to_container(stage.get("scheduler") or {"name": "none"}, resolve=True)
            if scheduler.get("name") == "onecycle":
                settings = scheduler.setdefault("onecycle", {})
                if stage.get("epochs"):
                    settings["stage_epochs"] = int(stage.epochs)
                if name == "segmenter":  # it steps on its own, shorter stream of positive batches
                    settings["steps_per_epoch"] = self._segmenter_batches()
            entry = build_optimization(getattr(self.net, name), stage.optimizer, OmegaConf.create(scheduler), self)
            out.append(entry if isinstance(entry, dict) else {"optimizer": entry})
        return out

    def _segmenter_batches(self) -> int:
        """The segmenter's steps an epoch: its stream's batches, within the epoch's (trainer.limit_train_batches)."""
        per_epoch = self.trainer.estimated_stepping_batches / self.trainer.max_epochs  # loads the training data
        loaders = self.trainer.train_dataloader
        return min(len(loaders[SEGMENTER_PART]), per_epoch) if isinstance(loaders, dict) else per_epoch

    def stages(self) -> tuple[bool, bool, bool]:
        """(classifier trains, segmenter trains, segmenter encoder frozen) in the current epoch: the thesis trains
        the classifier for task.classifier.epochs and the U-Net for task.segmenter.epochs, the first
        task.segmenter.freeze_encoder_epochs of them with its (pretrained) encoder frozen."""
        e, task = self.current_epoch, self.cfg.task
        limit = lambda stage: int(stage.get("epochs") or 10 ** 9)  # noqa: E731
        return (e < limit(task.classifier), e < limit(task.segmenter),
                e < int(task.segmenter.get("freeze_encoder_epochs") or 0))

    def _classifier_loss(self, x, target) -> torch.Tensor:
        return self.classifier_loss(self.net.classify(x), target.flatten(1).any(1).long())

    def _segmenter_loss(self, x, target) -> torch.Tensor | None:
        """On the positive images of (x, target) only; None without any."""
        positive = target.flatten(1).any(1)
        return self.segmenter_loss(self.net.segment(x[positive]), target[positive]) if positive.any() else None

    def training_step(self, batch, batch_idx):
        train_c, train_s, frozen = self.stages()
        encoder = getattr(self.net.segmenter, "backbone", None)
        if encoder is not None and frozen and self.cfg.task.segmenter.get("train_bn_while_frozen"):
            BaseFinetuning.freeze(encoder, train_bn=True)  # fastai's freeze: batch norm keeps learning
        elif encoder is not None:  # frozen as BackboneFinetuning freezes: no gradients, batch-norm statistics kept
            encoder.requires_grad_(not frozen).train(not frozen)
        optimizers = self.optimizers()
        schedulers = self.lr_schedulers() or []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        by_optimizer = {id(s.optimizer): s for s in schedulers}  # a network without a schedule has no entry
        # each network on its own batches, in its own stage's epochs: the segmenter's stream ends first (None)
        mixed, positives = batch["train"], batch[SEGMENTER_PART]
        parts = (("classifier", mixed, self._classifier_loss, train_c),
                 ("segmenter", positives, self._segmenter_loss, train_s and positives is not None))
        loss = torch.zeros((), device=mixed["image"].device)
        for k, (name, part, loss_of, active) in enumerate(parts):
            value = loss_of(part["image"], part["target"]) if active else None
            if value is None:
                continue
            loss = loss + manual_step(self, optimizers[k], value, by_optimizer.get(id(optimizers[k].optimizer)))
            self.log(f"train/{name}_loss", value, on_step=True, on_epoch=True, batch_size=len(part["image"]))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(mixed["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        x, target = batch["image"], batch["target"]
        loss_s = self._segmenter_loss(x, target)
        loss = self._classifier_loss(x, target) + (loss_s if loss_s is not None else 0)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(x))
        self.validation_scores(self.probabilities(self(x).float()), target)

    def validation_scores(self, probs, target):
        cls = probs[:, 1].mean((-2, -1))
        blanked = probs[:, :1] * (cls >= float(self.cfg.task.decision_threshold))[:, None, None, None]
        self.val_scores.update(blanked, target)
        self.val_auc.update(cls, target.flatten(1).any(1).long())

    def on_validation_epoch_end(self):
        values = self.val_scores.compute()
        self.val_scores.reset()
        self.log("val/dice", values["dice"], prog_bar=True, sync_dist=True)
        self.log("val/jaccard", values["jaccard"], sync_dist=True)
        if self.val_auc.update_count:
            self.log("val/auc", self.val_auc.compute(), sync_dist=True)
        self.val_auc.reset()

    def _collect(self, loader, device, tta: str = "none"):
        """(segmenter probabilities (N, H, W), classifier probabilities (N,), targets, sample indices)."""
        probs, targets, index = self.collect_probabilities(loader, device, tta)
        return probs[:, 0], probs[:, 1].mean((-2, -1)), targets, index

    def evaluate_heldout(self, datamodule, sample_ids: list[str], out_dir: Path, device, save_probabilities=True):
        """Search post-processing on the fold's validation part, score its test part once: the table rows
        segmenter / triplet / cascade x ArgMax / searched / TTA; writes predictions/<id>.png (cascade masks)."""
        cfg, task = self.cfg, self.cfg.task
        v_seg, v_cls, v_target, _ = self._collect(datamodule.val_dataloader(), device)
        empty = float(task.empty_score)
        post = {
            "segmenter": search_pixel_threshold(v_seg, v_target, min_areas=tuple(task.min_areas), empty_score=empty),
            "cascade": search_cascade(v_seg, v_cls, v_target, min_areas=tuple(task.min_areas), empty_score=empty),
            "triplet": search_triplet(v_seg, v_target, **{k: tuple(v) for k, v in task.triplet.items()},
                                      empty_score=empty),
            # the thesis' "Raw": the pixel threshold alone searched, the classifier deciding at its default
            "raw": search_cascade(v_seg, v_cls, v_target, decisions=[float(task.decision_threshold)],
                                  empty_score=empty),
        }
        seg, cls, target, index = self._collect(datamodule.test_dataloader(), device)
        positive = target.flatten(1).any(1)
        c, t = post["cascade"], post["triplet"]
        shape = tuple(seg.shape[-2:])
        fixed = Decision.of_run(cfg)
        d0 = fixed.decision_threshold
        segmenter = fixed.but(threshold=post["segmenter"]["threshold"], min_area=post["segmenter"]["min_area"])
        raw = fixed.but(threshold=post["raw"]["threshold"])
        searched = fixed.but(threshold=c["threshold"], min_area=c["min_area"], decision_threshold=c["decision_threshold"])
        # row -> (masks, the classifier probabilities and decision threshold behind them, or None)
        rows = {
            "segmenter, ArgMax": (fixed.masks(seg), None),
            "segmenter, searched threshold": (segmenter.masks(seg), None),
            "triplet (searched)": (apply_triplet(seg, t["top"], scaled([t["area"]], shape)[0], t["bottom"],
                                                 scaled([t["min_component"]], shape)[0]), None),
            "cascade, ArgMax": (fixed.masks(seg, cls), (cls, d0)),
            "cascade, Raw": (raw.masks(seg, cls), (cls, d0)),
            "cascade, searched threshold": (searched.masks(seg, cls), (cls, c["decision_threshold"])),
        }
        if task.tta != "none":
            a_seg, a_cls, _, _ = self._collect(datamodule.test_dataloader(), device, str(task.tta))
            rows[f"cascade, TTA ({task.tta})"] = (searched.masks(a_seg, a_cls), (a_cls, c["decision_threshold"]))
            rows[f"cascade, TTA ({task.tta}), Raw threshold"] = (raw.masks(a_seg, a_cls), (a_cls, d0))
        rows[ALL_EMPTY] = (torch.zeros_like(seg, dtype=torch.bool), None)  # a reference row, not a method
        table = {}
        for name, (m, classifier) in rows.items():
            row = {**mask_scores(m, target, cfg)[0], **(classifier_scores(*classifier, positive) if classifier else {})}
            table[name] = {k: row[k] for k in TABLE_COLUMNS if k in row}
        masks = {name: m for name, (m, _) in rows.items()}
        final = masks["cascade, searched threshold"]
        final_scores, each, _ = mask_scores(final, target, cfg)
        metrics = {**final_scores, **classifier_scores(cls, c["decision_threshold"], positive)}
        pred_dir = out_dir / "predictions"
        pred_dir.mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(index):
            Image.fromarray(final[i].numpy().astype(np.uint8) * 255).save(pred_dir / f"{sample_ids[idx]}.png")
        # with the classifier's probability and the truth, for the report's classifier ROC
        write_per_image(pred_dir, [sample_ids[i] for i in index], each, mask_present=positive.tolist(),
                        classifier_probability=cls.tolist())
        return metrics, {"table": table, "postprocessing": post}

    @classmethod
    def trivial_rows(cls, cfg, store, fold: dict) -> dict[str, dict[str, float]]:
        """All-empty masks on the fold's test part (the segmenter-alone rows are in Table 5.1)."""
        return {"all-empty": segmentation_baselines(cls.test_targets(store, fold), [str(c) for c in cfg.data.classes],
                                                    float(cfg.task.empty_score))["all-empty"]}

    @classmethod
    def check_splits(cls, cfg, splits: dict, store) -> None:
        """task.baseline_run must be a finished baseline with a post-processing table on these test parts."""
        if cfg.task.get("baseline_run"):
            cls._baseline_table(str(cfg.task.baseline_run), splits)

    @staticmethod
    def _baseline_table(run: str, splits: dict) -> dict:
        folder = require_run_dir(run)
        key = f"task.baseline_run={run}"
        if not (folder / "cv_summary.json").is_file():
            raise MedrunError(f"{key} has not finished (no cv_summary.json)")
        table = json.loads((folder / "cv_summary.json").read_text()).get("postprocessing_table")
        if not table:
            raise MedrunError(f"{key} has no post-processing table: train it with task.table=true "
                              "(experiment=unet_resnet34_siim does)")
        if test_parts(json.loads((folder / "splits.json").read_text())) != test_parts(splits):
            raise MedrunError(f"{key} was scored on other test parts: train this run with "
                              f"cv.splits_file={folder}/splits.json")
        return table

    @classmethod
    def finish_run(cls, cfg, run_dir: Path, splits: dict) -> dict:
        """The thesis' Table 5.1 over folds, mean ± std of each row and column (cv_summary["table_5_1"]), with
        the U-Net baseline's rows of task.baseline_run (a finished run on the same test parts) beside them."""
        records = fold_records(run_dir, splits)
        table = table_over_folds([r["table"] for r in records])
        if cfg.task.get("baseline_run"):
            baseline = cls._baseline_table(str(cfg.task.baseline_run), splits)
            table.update({f"baseline U-Net, {row}": values for row, values in baseline.items()})
        return {"table_5_1": table}

    @classmethod
    def summary_markdown(cls, summary: dict) -> str:
        return table_markdown(summary["table_5_1"], "Table 5.1 (mean ± std over folds)",
                              "Pixel threshold, minimum area, triplet and the classifier's decision threshold are "
                              "searched on each fold's validation part and applied unchanged to its test part.")

    @classmethod
    def evaluate_predictions(cls, cfg, out_dir, store, search, evaluation, ids, folds, *, tta, threshold,
                             objective, target_sensitivity, min_areas):
        """eval's rows for a cascade run: ArgMax (0.5 / 0.5), searched (decision, pixel threshold, min area), TTA."""
        plain, augmented, target = evaluation
        positive = target.flatten(1).any(1)
        task = cfg.task
        fixed = decision = Decision.of_run(cfg, tta)
        extra = {}
        if threshold == "search":
            s_probs, s_target = search
            found = search_cascade(s_probs[:, 0], s_probs[:, 1].mean((-2, -1)), s_target,
                                   min_areas=tuple(min_areas), empty_score=float(task.empty_score))
            decision = fixed.but(threshold=found["threshold"], decision_threshold=found["decision_threshold"],
                                 min_area=found["min_area"])
            extra = {"search_dice": found["dice"]}

        def row(probs, d: Decision):
            c = probs[:, 1].mean((-2, -1))
            masks = d.masks(probs[:, 0], c)
            s, per, counts = mask_scores(masks, target, cfg)
            return {**s, **classifier_scores(c, d.decision_threshold, positive)}, per, masks, counts

        rows = {"argmax": row(plain, fixed)}
        if threshold == "search":
            rows["threshold"] = row(plain, decision)
        if tta != "none":
            rows["tta"] = row(augmented, decision)
        _, per, masks, counts = rows[list(rows)[-1]]
        with open(out_dir / "per_sample.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "fold", "predicted_fraction", "dice", "jaccard"])
            for i, sid in enumerate(ids):
                w.writerow([sid, folds[i], f"{masks[i].float().mean():.6f}", f"{per['dice'][i]:.6f}",
                            f"{per['jaccard'][i]:.6f}"])
        return {"rows": {k: v[0] for k, v in rows.items()}, "postprocessing": {**decision.stored(), **extra},
                "resample": image_resampler(counts, [str(c) for c in cfg.data.classes], float(task.empty_score),
                                            str(task.get("absent_classes", "ignore")))}

    @classmethod
    def mask_from_probabilities(cls, probs: np.ndarray, decision: Decision) -> tuple[np.ndarray, np.ndarray]:
        """predict: the segmenter's mask at the input's size, blanked when the classifier says empty."""
        return decision.mask(probs[0], float(probs[1].mean())).astype(np.uint8) * 255, probs[0]
