"""Explanation of a finished run: Grad-CAM family heatmaps with measured faithfulness (pytorch-grad-cam),
and bottleneck-feature clustering with agreement scores and t-SNE / UMAP embeddings (scikit-learn, umap-learn)."""
