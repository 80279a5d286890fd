"""Bottleneck features of a network, their clusterings (k-means, Birch, agglomerative) with pairwise and
label agreement (adjusted Rand, NMI), and 2-D embeddings (t-SNE, UMAP) plotted three ways."""
from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.cluster import AgglomerativeClustering, Birch, KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402

from medrun.registry import Registry  # noqa: E402

CLUSTERINGS: Registry = Registry("clustering", "clusters")
CLUSTERINGS.register("k-means")(lambda k, seed: KMeans(k, n_init=10, random_state=seed))
CLUSTERINGS.register("birch")(lambda k, seed: Birch(n_clusters=k))
CLUSTERINGS.register("agglomerative")(lambda k, seed: AgglomerativeClustering(k))

EMBEDDINGS: Registry = Registry("embedding", "embed")


@EMBEDDINGS.register("tsne")
def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    return TSNE(2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca", random_state=seed).fit_transform(x)


@EMBEDDINGS.register("umap")
def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    import umap

    return umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1).fit_transform(x)


@torch.inference_mode()
def features(net: torch.nn.Module, layer: torch.nn.Module, images: torch.Tensor, batch_size: int = 16,
             pool: int | None = None) -> np.ndarray:
    """(N, D) features: the layer's output (the last of a list, e.g. an encoder's stages) globally averaged,
    or adaptively pooled to `pool` x `pool` cells and flattened; a linear layer's input as it is."""
    captured = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            captured.append(inputs[0])
            return
        out = output[-1] if isinstance(output, (list, tuple)) else output
        pooled = F.adaptive_avg_pool2d(out, pool or 1)
        captured.append(pooled.flatten(1))

    handle = layer.register_forward_hook(hook)
    try:
        net.eval()
        forward = getattr(net, "feature_forward", net)  # an adversarial setup explains its generator
        for i in range(0, len(images), batch_size):
            forward(images[i: i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured).float().cpu().numpy()


def reduce(x: np.ndarray, dim: int | None, seed: int) -> np.ndarray:
    """Standardised features, then PCA to `dim` components (at most the number of samples) when given."""
    x = StandardScaler().fit_transform(x)
    if not dim or dim >= x.shape[1]:
        return x
    return PCA(min(dim, *x.shape), random_state=seed).fit_transform(x)


def agreement(labelings: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Adjusted Rand index ([-1, 1], 1 = identical partitions) and NMI ([0, 1]) of every pair of labelings."""
    out = {}
    for a, b in itertools.combinations(labelings, 2):
        out[f"{a} vs {b}"] = {"ari": float(adjusted_rand_score(labelings[a], labelings[b])),
                              "nmi": float(normalized_mutual_info_score(labelings[a], labelings[b]))}
    return out


def cluster(x: np.ndarray, methods: list[str], k: int, seed: int) -> dict[str, np.ndarray]:
    return {m: CLUSTERINGS.get(m)(k, seed).fit_predict(x) for m in methods}


def nearest_to_centres(x: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """For each cluster, the sample nearest its centroid (the image shown with a Grad-CAM)."""
    out = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        centre = x[members].mean(0)
        out[int(c)] = int(members[np.argmin(((x[members] - centre) ** 2).sum(1))])
    return out


def plot_embedding(xy: np.ndarray, colourings: dict[str, tuple[np.ndarray, bool]], path: Path, title: str) -> None:
    """One panel per colouring: (values, continuous?)."""
    fig, axes = plt.subplots(1, len(colourings), figsize=(4.2 * len(colourings), 4), squeeze=False)
    for ax, (name, (values, continuous)) in zip(axes[0], colourings.items()):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=14, cmap="viridis" if continuous else "tab10")
        if continuous:
            fig.colorbar(points, ax=ax)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
