"""`medrun explain`: heatmaps of a run's held-out or test images with measured faithfulness, and clusters of
its bottleneck features. Writes <run>/explain/<time>/."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402

from medrun.data.build import build_store  # noqa: E402
from medrun.errors import MedrunError  # noqa: E402
from medrun.evaluation.decision import Decision  # noqa: E402
from medrun.evaluation.reports import md  # noqa: E402
from medrun.explain import clusters as cl  # noqa: E402
from medrun.explain.cam import METHODS, compute_cams, faithfulness, mass_inside, targets_for  # noqa: E402
from medrun.explain.layers import find_layer  # noqa: E402
from medrun.models.layers import default_cam_layer, default_feature_layer  # noqa: E402
from medrun.inference import load_run  # noqa: E402
from medrun.predict import choose_postprocessing  # noqa: E402
from medrun.report import write_page  # noqa: E402
from medrun.runs import create_run_dir, file_part, write_json, write_text  # noqa: E402


def _images(run, fold: int, limit: int | None):
    """The fold's held-out images (the fixed test set when there is one): ids, preprocessed tensors, the
    cached uint8 images for display, and targets."""
    store = build_store(run.config, preload=False)
    ids = run.splits.get("fixed_test") or run.splits["folds"][fold]["test"]
    ids = ids[:limit] if limit else ids
    ds = run.dataset(store, ids)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["image"] for it in items])
    shown = [store.get(store.index[i])[0] for i in ids]
    return ids, x, shown, torch.stack([torch.as_tensor(it["target"]) for it in items])


def _rgb(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32) / 255.0
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]


def _montage(panels: list[tuple[np.ndarray, str]], path: Path, title: str, columns: int = 4) -> None:
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, label) in zip(axes.flat, panels):
        ax.imshow(image)
        ax.set_title(label, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain_run(run_dir, method: str = "gradcam", layer: str | None = None, n: int = 16, target: str | None = None,
                compare=("gradcam", "gradcam++", "eigencam", "layercam"), clusters=(), k: int = 4,
                embed: str = "tsne", dim: int | None = None, pool: int | None = None, feature_layer: str | None = None,
                fold: int = 0, device: str = "auto", allow_unsafe_checkpoints: bool = False,
                seed: int = 0, cluster_classes: list[str] | None = None) -> tuple[Path, dict]:
    """Heatmaps of `method` on `n` held-out images of fold `fold`'s model, the faithfulness of every method in
    `compare`, and (with `clusters`) clusterings of the bottleneck features of all held-out images (or of those of
    `cluster_classes`)."""
    METHODS.get(method)
    for m in compare:
        METHODS.get(m)
    for c in clusters:
        cl.CLUSTERINGS.get(c)
    cl.EMBEDDINGS.get(embed)
    run = load_run(run_dir, device=device, allow_unsafe_checkpoints=allow_unsafe_checkpoints)
    if not 0 <= fold < len(run.models):
        raise MedrunError(f"fold={fold}: the run has folds 0..{len(run.models) - 1}")
    net = run.models[fold].net.eval()
    cam_layer = find_layer(net, layer or default_cam_layer(net))
    classes = [str(c) for c in run.config.data.classes]
    spatial = run.spatial
    target_class = None
    if target is not None:
        if spatial or str(target) not in classes:
            raise MedrunError(f"target={target!r}: give a class of this classifier ({', '.join(classes)})")
        target_class = classes.index(str(target))

    ids, x, shown, truth = _images(run, fold, None)
    x = x.to(run.device)
    with torch.no_grad():
        outputs = torch.cat([net(x[i: i + 16]).float() for i in range(0, len(x), 16)])
    # a single-label classifier predicts as predict does: by the run's own eval decision (a searched threshold on
    # the positive class); otherwise argmax (segmenters and discriminators have their own targets)
    predicted, decided_by = outputs.argmax(1).cpu().numpy(), None
    if not spatial and outputs.shape[1] > 1 and run.config.data.get("mode") != "multilabel":
        stored, decided_by = choose_postprocessing(run.dir, None)
        predicted = Decision.read(stored, run.config).labels(torch.softmax(outputs, 1).cpu().numpy(), False)
    out_dir = create_run_dir(run.dir, "explain")
    try:  # a failed explanation leaves no partial folder behind
        chosen = slice(0, n)
        targets = targets_for(outputs[chosen], spatial, target_class, predicted[chosen])
        cams = compute_cams(net, cam_layer, method, x[chosen], targets)
        result = {"run": str(run.dir), "fold": fold, "method": method, "layer": layer or default_cam_layer(net),
                  "images": [], "faithfulness": {}, **({"predictions_by": decided_by} if decided_by else {})}
        panels = {}
        for i, sid in enumerate(ids[chosen]):
            overlay = show_cam_on_image(_rgb(shown[i]), cams[i], use_rgb=True)
            plt.imsave(out_dir / f"cam_{file_part(sid)}.png", overlay)
            record = {"id": sid}
            if spatial:
                record["mask_pixels"] = int((truth[i] > 0).sum())
            elif outputs.shape[1] == 1:  # a discriminator's score, no class prediction
                record.update(score=float(torch.sigmoid(outputs[i, 0])), true=classes[int(truth[i])])
                panels.setdefault("all", []).append((overlay, f"{classes[int(truth[i])]} {sid} "
                                                              f"({record['score']:.2f})"))
            else:
                pred = int(predicted[i])
                true = int(truth[i]) if truth[i].ndim == 0 else None
                record.update(predicted=classes[pred], true=classes[true] if true is not None else None)
                for c, name in enumerate(classes):
                    kind = ("TP" if pred == c and true == c else "FP" if pred == c else "FN" if true == c else None)
                    if kind:
                        panels.setdefault(name, []).append((overlay, f"{kind} {sid}"))
            result["images"].append(record)
        if spatial:
            masks = (truth[chosen] > 0).numpy()
            has = masks.reshape(len(masks), -1).any(1)
            inside = mass_inside(cams, masks)
            scored = has & np.isfinite(inside)
            for rec, v, ok in zip(result["images"], inside, scored):
                rec["cam_mass_in_mask"] = float(v) if ok else None
            result["cam_mass_in_mask"] = float(inside[scored].mean()) if scored.any() else None
            result["mask_area_fraction"] = float(masks[scored].mean()) if scored.any() else None
            result["all_zero_cams"] = int((has & ~scored).sum())
            _montage([(show_cam_on_image(_rgb(shown[i]), cams[i], use_rgb=True), sid) for i, sid in enumerate(ids[chosen])],
                     out_dir / "montage.png", f"{method} on {result['layer']}")
        else:
            for name, items in panels.items():
                order = sorted(items, key=lambda p: {"TP": 0, "FP": 1, "FN": 2}.get(p[1].split()[0], 0))
                title = f"{method}: class {name} (TP / FP / FN)" if name != "all" else f"{method} on the discriminator"
                _montage(order[:16], out_dir / f"montage_{file_part(name)}.png", title)
        for m in compare:
            c = cams if m == method else compute_cams(net, cam_layer, m, x[chosen], targets)
            result["faithfulness"][m] = faithfulness(net, x[chosen], c, targets)
        if clusters:
            if cluster_classes:  # cluster the images of the chosen classes only
                unknown = [c for c in cluster_classes if c not in classes]
                if spatial or unknown:
                    raise MedrunError(f"classes={','.join(cluster_classes)}: give classes of this classifier "
                                      f"({', '.join(classes)})" if unknown else "classes= applies to classification runs")
                labels = truth if truth.ndim == 1 else truth.argmax(1)
                keep = [k for k, t in enumerate(labels) if classes[int(t)] in cluster_classes]
                x, outputs, truth = x[keep], outputs[keep], truth[keep]
                predicted = predicted[keep]
                ids, shown = [ids[k] for k in keep], [shown[k] for k in keep]
            result["clusters"] = _cluster(net, x, outputs, truth, ids, shown, spatial, clusters, k, embed, dim, pool,
                                          feature_layer, cam_layer, method, out_dir, seed, target_class, predicted)
            result["clusters"]["classes"] = list(cluster_classes) if cluster_classes else None
        write_json(out_dir / "explain.json", result)
        _table(result, out_dir)
        write_page("run", run.dir)
        return out_dir, result
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _cluster(net, x, outputs, truth, ids, shown, spatial, methods, k, embed, dim, pool, feature_layer, cam_layer,
             method, out_dir, seed, target_class, predicted) -> dict:
    if len(ids) <= k:
        raise MedrunError(f"k={k} clusters need more than {k} held-out images (found {len(ids)})")
    name = feature_layer or default_feature_layer(net)
    feats = cl.reduce(cl.features(net, find_layer(net, name, "feature_layer"), x, pool=pool), dim, seed)
    labels = cl.cluster(feats, list(methods), k, seed)
    if spatial:
        true = (truth.flatten(1) > 0).any(1).long().numpy()  # has a lesion
        prob = torch.sigmoid(outputs[:, 0]).flatten(1).max(1).values.numpy()
    else:
        true = truth.numpy() if truth.ndim == 1 else truth.argmax(1).numpy()
        prob = torch.softmax(outputs, 1).max(1).values.numpy() if outputs.shape[1] > 1 else torch.sigmoid(outputs[:, 0]).numpy()
    xy = cl.EMBEDDINGS.get(embed)(feats, seed)
    first = list(methods)[0]
    # one class only (classes=, or no image with a lesion): there is no labelling for the clusters to agree with
    truth_panel = {"true label": true} if len(np.unique(true)) > 1 else {}
    panels = {f"{first} clusters": labels[first], **truth_panel}
    cl.plot_embedding(xy, {**{n: (v, False) for n, v in panels.items()}, "predicted probability": (prob, True)},
                      out_dir / f"{embed}.png",
                      f"{embed} of {name} features ({feats.shape[1]} dims, {len(ids)} images)")
    nearest = cl.nearest_to_centres(feats, labels[first])
    picks = list(nearest.values())
    targets = targets_for(outputs[picks], spatial, target_class, predicted[picks])
    cams = compute_cams(net, cam_layer, method, x[picks], targets)
    _montage([(show_cam_on_image(_rgb(shown[i]), cams[j], use_rgb=True), f"cluster {c}: {ids[i]}")
              for j, (c, i) in enumerate(nearest.items())], out_dir / "clusters_gradcam.png",
             f"{method} of the image nearest each {first} centre")
    return {"feature_layer": name, "dims": int(feats.shape[1]), "k": k, "embedding": embed,
            "agreement": cl.agreement({**labels, **truth_panel}),
            "sizes": {m: np.bincount(v, minlength=k).tolist() for m, v in labels.items()},
            "nearest_to_centre": {str(c): ids[i] for c, i in nearest.items()}}


def _cluster_lines(c: dict) -> list[str]:
    """summary.md's clusters section: sizes, the image nearest each centre, agreement (ARI, NMI) when there are
    two labellings to compare."""
    first = next(iter(c["sizes"]))
    lines = ["", f"## Clusters: k={c['k']} on {c['dims']}-dimensional features of {c['feature_layer']}"
             + (f", images of {md(', '.join(c['classes']))}" if c.get("classes") else ""), "",
             f"Map: {c['embedding']}.png; each {first} cluster's image nearest its centre, with its heatmap: "
             "clusters_gradcam.png.", "", "| clustering | images per cluster |", "|---|---|"]
    lines += [f"| {m} | {', '.join(map(str, sizes))} |" for m, sizes in c["sizes"].items()]
    lines += ["", f"Nearest each {first} centre: " + ", ".join(f"{k}: {md(i)}" for k, i in c["nearest_to_centre"].items())
              + "."]
    if c["agreement"]:
        lines += ["", "| clusterings | adjusted Rand | NMI |", "|---|---|---|"]
        lines += [f"| {pair} | {v['ari']:.3f} | {v['nmi']:.3f} |" for pair, v in c["agreement"].items()]
    else:
        lines += ["", "No agreement to measure: one clustering, and the images are of one class."]
    return lines


def _table(result: dict, out_dir: Path) -> None:
    lines = [f"# Explanation of {md(result['run'])} (fold {result['fold']}, layer {result['layer']})", "",
             "Faithfulness (pytorch-grad-cam, mean over images): ROAD MoRF is the score's change when the most "
             "relevant pixels are removed (lower is more faithful), LeRF when the least relevant are removed "
             "(higher is better).", "",
             "| method | ROAD MoRF | ROAD LeRF | LeRF - MoRF | CAM x image change |", "|---|---|---|---|---|"]
    for m, f in result["faithfulness"].items():
        lines.append(f"| {m} | {f['road_morf']:.4f} | {f['road_lerf']:.4f} | {f['road_gap']:.4f} | "
                     f"{f['cam_mult_change']:.4f} |")
    if result.get("cam_mass_in_mask") is not None:
        lines += ["", f"CAM mass inside the ground-truth mask (energy pointing game): {result['cam_mass_in_mask']:.3f} "
                      f"(the masks cover {result['mask_area_fraction']:.3f} of those images)."]
    if result.get("all_zero_cams"):
        lines += ["", f"{result['all_zero_cams']} image(s) with a mask have an all-zero {result['method']} map: "
                      "no heat to place, so they are left out of the pointing game (try method=eigencam or another "
                      "layer=)."]
    if result.get("clusters"):
        lines += _cluster_lines(result["clusters"])
    write_text(out_dir / "summary.md", "\n".join(lines) + "\n")
