"""The benchmark script end to end at tiny sizes, GPU section included (it runs on the CPU here)."""
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench  # noqa: E402

pytestmark = pytest.mark.slow  # every benchmark section end to end


def test_bench_writes_a_table_with_every_measurement(tmp_path):
    text = bench.main(["--quick", "--gpu", "--out", str(tmp_path), "--name", "quick"]).read_text()
    for row in ("hand-written loop, s/step", "medrun full path, s/step", "medrun / hand-written",
                "CVC-ClinicDB TIFF: medrun decode + resize + augment", "ISBI-2012 PNG: per-sample loader, cache=on, workers=2", "batched (uint8 flips) path, flips, batch 32",
                "batched (kornia) path, AUCMEDI set", "the CPU's part in a GPU run (gather by index)",
                "medrun batched path + flips / hand-written",
                "threshold search, 100 thresholds", "TTA cost factor", "measured bf16 matmul rate",
                "Sharp U-Net 32x32 bf16-mixed + channels_last", "U-Net 32x32 fp32", "5-fold sharp_unet_isbi",
                "search time the cascade adds", "network time the classifier adds", "Grad-CAM, ResNet18 classifier",
                "tsne of 100 x 64 features", "umap of 100 x 64 features", "CycleGAN training, 32x32",
                "time to the first training step, data.cache=disk, second run (reuses)",
                "loader memory (PSS of the process and its workers), data.cache=disk, num_workers=2",
                "MONAI PersistentDataset, second pass", "MONAI CacheDataset fill"):
        assert row in text, row
    ratio = float(re.search(r"\| medrun / hand-written \| ([0-9.]+) \|", text).group(1))
    assert 0.2 < ratio < 20
    assert "- command: `python scripts/bench.py --quick --gpu" in text and "torch 2.14.1" in text
