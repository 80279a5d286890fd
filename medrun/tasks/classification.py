"""The classification LightningModule: binary / multi-class (softmax) and multi-label (sigmoid)."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import open_dict
from sklearn.utils.class_weight import compute_class_weight
from torchmetrics import AUROC

from medrun.config_values import positive_index
from medrun.errors import MedrunError
from medrun.evaluation.classification import classification_scores, save_curves, save_plots
from medrun.evaluation.decision import Decision
from medrun.evaluation.intervals import class_strata
from medrun.evaluation.metrics import compact
from medrun.evaluation.thresholds import search_decision_threshold
from medrun.evaluation.trivial import classification_baselines
from medrun.runs import fold_folder, write_json
from medrun.tasks.base import TASKS, ConfiguredTask
from medrun.tasks.classification_losses import build_classification_loss


@TASKS.register("classification")
class ClassificationTask(ConfiguredTask):
    """Binary and multi-class tasks use softmax outputs, multi-label tasks sigmoid outputs."""
    class_probabilities = True

    def __init__(self, config: dict):
        self.class_names = [str(c) for c in config["data"]["classes"]]
        self.multilabel = config["data"]["mode"] == "multilabel"
        n = len(self.class_names)
        super().__init__(config, n)
        self.ordinal = ordinal(self.cfg)
        self.balanced = self.cfg.task.get("class_weights") == "balanced"
        if self.cfg.task.get("class_weights") not in (None, "balanced"):
            raise MedrunError(f"task.class_weights={self.cfg.task.class_weights!r}; valid: null, balanced")
        # Weights are placeholders until setup() computes them from the fold's training part; the buffer
        # exists from the start, so a checkpoint loads into a freshly built task.
        self.loss = build_classification_loss(self.cfg.task.loss, self.multilabel,
                                              torch.ones(n) if self.balanced else None, self.class_names,
                                              positive_index(self.cfg.data))
        # per class, averaged over the classes whose AUC the validation part defines (torchmetrics scores the
        # others 0, which would pull the monitored mean down by classes the part says nothing about)
        self.val_auc = AUROC(task="multilabel", num_labels=n, average="none") if self.multilabel \
            else AUROC(task="multiclass", num_classes=n, average="none")
        self.auc_defined = torch.ones(n, dtype=torch.bool)
        self.decision = Decision.of_run(self.cfg)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        dm = self.trainer.datamodule
        self.auc_defined = torch.as_tensor(auc_defined(part_samples(dm.store, dm.split["val"]), len(self.class_names),
                                                       self.multilabel))
        if self.balanced:
            samples = part_samples(dm.store, dm.split["train"])
            self.loss.weight.copy_(torch.as_tensor(balanced_weights(samples, len(self.class_names), self.multilabel)))

    def probabilities(self, logits):
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    @classmethod
    def serving_meaning(cls, cfg) -> str:
        if cfg.data.get("mode") == "multilabel":
            return "(N, K) probability per class (sigmoid); a class is present when >= its threshold"
        if len(cfg.data.classes) == 2:
            positive = cfg.data.classes[positive_index(cfg.data)]
            return (f"(N, 2) class probabilities (softmax); prediction = {positive} when its probability >= "
                    "postprocessing.threshold, argmax when that is null")
        return "(N, K) class probabilities (softmax); prediction = argmax"

    def validation_scores(self, probs, target):
        self.val_auc.update(probs, target.long())

    def on_validation_epoch_end(self):
        with warnings.catch_warnings():  # torchmetrics' notice that an undefined class scores 0: left out below
            warnings.filterwarnings("ignore", message=r"No (positive|negative) samples in targets")
            per_class = self.val_auc.compute()
        if self.auc_defined.any():  # check_splits refused a val/auc monitor without it
            self.log("val/auc", per_class[self.auc_defined.to(per_class.device)].mean(), prog_bar=True, sync_dist=True)
        self.val_auc.reset()

    def evaluate_heldout(self, datamodule, sample_ids: list[str], out_dir: Path, device, save_probabilities=True):
        """Metrics on the fold's test part; writes predictions.csv (id, truth, probabilities, prediction), plots.
        With task.feature_classifier=bagging the probabilities come from a bagging tree classifier fitted on the
        network's pooled features of the fold's training part (bagging.json names the images it was fitted on)."""
        if self.cfg.task.get("feature_classifier") == "bagging":
            probs, targets, index = self.bagging_probabilities(datamodule, sample_ids, out_dir, device)
        else:
            probs, targets, index = self.collect_probabilities(datamodule.test_dataloader(), device)
            probs, targets = probs.numpy(), targets.numpy()
        write_predictions(out_dir / "predictions.csv", [sample_ids[i] for i in index], targets, probs,
                          self.class_names, self.multilabel, self.decision)
        metrics, cm = classification_scores(targets, probs, self.class_names, self.multilabel, self.decision,
                                            self.ordinal)
        save_plots(targets, probs, self.class_names, self.multilabel, out_dir, decision=self.decision)
        return metrics, ({"confusion_matrix": cm} if cm else {})

    def pooled_features(self, loader, device):
        """(features, targets, sample indices): the input of the network's last linear layer, per image."""
        from medrun.models.layers import default_feature_layer

        layer = dict(self.net.named_modules())[default_feature_layer(self.net)]
        feats, targets, index = [], [], []
        hook = layer.register_forward_pre_hook(lambda module, args: feats.append(args[0].flatten(1).float().cpu()))
        try:
            self.to(device).eval()
            with torch.inference_mode():
                for batch in loader:
                    self(batch["image"].to(device))
                    targets.append(compact(batch["target"]))
                    index += batch["index"].tolist()
        finally:
            hook.remove()
        return torch.cat(feats).numpy(), torch.cat(targets).numpy(), index

    def bagging_probabilities(self, datamodule, sample_ids: list[str], out_dir: Path, device):
        """The thesis' "DenseNet-121 + BGT": scikit-learn's BaggingClassifier (decision trees) on the pooled
        features of the fold's training part, predicting its test part."""
        from sklearn.ensemble import BaggingClassifier

        if self.multilabel:
            raise MedrunError("task.feature_classifier=bagging applies to single-label classification")
        x_train, y_train, train_index = self.pooled_features(datamodule.scoring_dataloader("train"), device)
        options = self.cfg.task.get("bagging") or {}
        forest = BaggingClassifier(n_estimators=int(options.get("n_estimators", 10)),
                                   random_state=int(self.cfg.seed)).fit(x_train, y_train)
        x_test, targets, index = self.pooled_features(datamodule.test_dataloader(), device)
        probs = np.zeros((len(x_test), len(self.class_names)))
        probs[:, forest.classes_.astype(int)] = forest.predict_proba(x_test)  # a class absent from training: 0
        write_json(out_dir / "bagging.json", {"n_estimators": forest.n_estimators, "features": int(x_train.shape[1]),
                                              "fitted_on": sorted(sample_ids[i] for i in train_index)})
        return probs, targets, index

    def validation_metrics(self, datamodule, device) -> dict[str, float]:
        probs, targets, _ = self.collect_probabilities(datamodule.val_dataloader(), device)
        return classification_scores(targets.numpy(), probs.numpy(), self.class_names, self.multilabel,
                                     self.decision, self.ordinal)[0]

    @classmethod
    def check_splits(cls, cfg, splits: dict, store) -> None:
        """A val/auc monitor needs a validation part where some class's AUC is defined, in every fold."""
        if cfg.task.monitor.metric == "val/auc":
            multilabel = cfg.data.mode == "multilabel"
            for fold in splits["folds"]:
                samples = part_samples(store, fold["val"])
                if not auc_defined(samples, len(cfg.data.classes), multilabel).any():
                    what = "no label both present and absent" if multilabel else \
                        f"images of {int(truth_matrix(samples, len(cfg.data.classes), False).any(0).sum())} class(es)"
                    raise MedrunError(
                        f"fold {fold['fold']}'s validation part ({len(samples)} images) holds {what}, so val/auc, "
                        "the task.monitor.metric, is undefined there: monitor val/loss (task.monitor.metric=val/loss "
                        "task.monitor.mode=min) or give the validation part more images (cv.val_fraction)")

    @classmethod
    def finish_run(cls, cfg, run_dir: Path, splits: dict) -> dict:
        """The class the binary `*_positive` metrics are about; pooled out-of-fold metrics and plots, when every
        sample was held out exactly once (k-fold)."""
        out = {"positive_class": str(cfg.data.classes[positive_index(cfg.data)])} if cls.searchable(cfg) else {}
        if splits["protocol"] != "kfold":
            return out
        classes, multilabel = [str(c) for c in cfg.data.classes], cfg.data.mode == "multilabel"
        targets, probs = read_predictions([fold_folder(run_dir, f["fold"]) / "predictions.csv" for f in splits["folds"]],
                                          classes, multilabel)
        decision = Decision.of_run(cfg)
        metrics, cm = classification_scores(targets, probs, classes, multilabel, decision, ordinal(cfg))
        save_plots(targets, probs, classes, multilabel, run_dir, prefix="oof_", decision=decision)
        write_json(run_dir / "oof_metrics.json", {"metrics": metrics, "confusion_matrix": cm})
        return {**out, "pooled_out_of_fold": metrics}

    @classmethod
    def trivial_rows(cls, cfg, store, fold: dict) -> dict[str, dict[str, float]]:
        """The training part's majority class (DummyClassifier) scored on the fold's test part."""
        labels = {part: np.stack([np.asarray(store.get(i)[1]) for i in store.indices(fold[part])])
                  for part in ("train", "test")}
        return classification_baselines(labels["train"], labels["test"], [str(c) for c in cfg.data.classes],
                                        cfg.data.get("mode") == "multilabel", positive_index(cfg.data), ordinal(cfg))

    @classmethod
    def complete_config(cls, cfg) -> None:
        """Class names from the data when the config has none; the mode (the network is the same for both;
        training reads the mode from the data)."""
        from medrun.data.build import list_dataset

        if not cfg.data.get("classes"):
            list_dataset(cfg)
        elif cfg.data.get("mode") in (None, "auto"):
            with open_dict(cfg):
                cfg.data.mode = "multilabel" if cfg.data.get("label_columns") else "multiclass"

    @classmethod
    def searchable(cls, cfg) -> bool:
        """Whether eval's decision-threshold search applies: binary single-label."""
        return len(cfg.data.classes) == 2 and cfg.data.get("mode") != "multilabel"

    @classmethod
    def evaluate_predictions(cls, cfg, out_dir, store, search, evaluation, ids, folds, *, tta, threshold,
                             objective, target_sensitivity, min_areas):
        """eval's rows (ArgMax / searched decision threshold / TTA), per_sample.csv, ROC and PR curves."""
        classes = [str(c) for c in cfg.data.classes]
        multilabel = cfg.data.mode == "multilabel"
        plain, augmented, target = (t.cpu().numpy() for t in evaluation)
        fixed = Decision.of_run(cfg, tta)
        decision, found = fixed, None
        if threshold == "search":
            p = fixed.positive
            found = search_decision_threshold((search[1].cpu().numpy() == p).astype(int), search[0].cpu().numpy()[:, p],
                                              objective, target_sensitivity)
            decision = fixed.but(threshold=found["threshold"])
        graded = ordinal(cfg)
        rows = {"argmax": classification_scores(target, plain, classes, multilabel, fixed, graded)[0]}
        if threshold == "search":
            rows["threshold"] = classification_scores(target, plain, classes, multilabel, decision, graded)[0]
        if tta != "none":
            rows["tta"] = classification_scores(target, augmented, classes, multilabel, decision, graded)[0]
        probs = augmented if tta != "none" else plain
        write_predictions(out_dir / "per_sample.csv", ids, target, probs, classes, multilabel, decision, folds)
        save_curves(target, probs, classes, multilabel, out_dir, fixed.positive)
        binary = len(classes) == 2 and not multilabel
        return {"rows": rows, "postprocessing": {**decision.stored(), **({"search": found} if found else {})},
                **({"positive_class": classes[fixed.positive]} if binary else {}),
                "resample": (lambda idx: classification_scores(target[idx], probs[idx], classes, multilabel, decision,
                                                               graded)[0], class_strata(target, multilabel))}


def ordinal(cfg) -> bool:
    """data.ordinal: the classes are grades in order (kappa_quadratic is reported); single-label only."""
    if not cfg.data.get("ordinal"):
        return False
    if cfg.data.get("mode") == "multilabel":
        raise MedrunError("data.ordinal=true says the classes are grades in order; multi-label data has no order: "
                          "drop data.ordinal")
    return True


def part_samples(store, part: list) -> list:
    """The samples of one part of a fold (ids as splits.json lists them)."""
    return [store.samples[i] for i in store.indices(part)]


def truth_matrix(samples, n_classes: int, multilabel: bool) -> np.ndarray:
    """(N, K) 0/1: which classes each sample has."""
    if multilabel:
        return np.array([s.extra["targets"] for s in samples], dtype=np.float64).reshape(len(samples), n_classes)
    return np.eye(n_classes)[[s.label for s in samples]]


def auc_defined(samples, n_classes: int, multilabel: bool) -> np.ndarray:
    """(K,) bool: the classes whose one-vs-rest AUC these samples define (both outcomes occur)."""
    y = truth_matrix(samples, n_classes, multilabel)
    return (y.sum(0) > 0) & (y.sum(0) < len(y))


def balanced_weights(samples, n_classes: int, multilabel: bool) -> np.ndarray:
    """Single-label: scikit-learn's inverse-frequency class weights (absent classes 1). Multi-label: BCE's
    pos_weight per label, negatives / positives (1 for a label with no positives or no negatives)."""
    if multilabel:
        y = truth_matrix(samples, n_classes, True)
        pos, neg = y.sum(0), len(y) - y.sum(0)
        return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0).astype(np.float32)
    labels = np.array([s.label for s in samples])
    present = np.unique(labels)
    w = np.ones(n_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return w


def write_predictions(path: Path, ids, targets, probs, classes, multilabel, decision: Decision | None = None,
                      folds=None) -> None:
    """One row per sample: id, [fold], truth, class probabilities, prediction, correct (all labels right)."""
    pred = (decision or Decision()).labels(probs, multilabel)
    truth_cols = [f"true_{c}" for c in classes] if multilabel else ["true"]
    pred_cols = [f"pred_{c}" for c in classes] if multilabel else ["pred"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *(["fold"] if folds else []), *truth_cols, *(f"prob_{c}" for c in classes), *pred_cols,
                    "correct"])
        for i, sid in enumerate(ids):
            truth = [int(v) for v in targets[i]] if multilabel else [int(targets[i])]
            labels = [int(v) for v in pred[i]] if multilabel else [int(pred[i])]
            w.writerow([sid, *([folds[i]] if folds else []), *truth, *(f"{p:.6f}" for p in probs[i]), *labels,
                        int(truth == labels)])


def read_predictions(paths: list[Path], classes: list[str], multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for p in paths for r in csv.DictReader(open(p))]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    if multilabel:
        targets = np.array([[int(r[f"true_{c}"]) for c in classes] for r in rows])
    else:
        targets = np.array([int(r["true"]) for r in rows])
    return targets, probs
