"""Dataset readers (one module per on-disk layout), splits, transforms and the fold datamodule."""
from omegaconf import DictConfig

from medrun.data import (  # noqa: F401  (register readers)
    class_folders, csv_table, cvc, folders, infnet, isbi, medmnist, siim, synthetic, synthetic_classes)
from medrun.data.samples import READERS, Dataset, Sample


def build_dataset(cfg: DictConfig) -> Dataset:
    """List the samples of the dataset described by the `data` config group."""
    return READERS.get(cfg.reader)(cfg)


__all__ = ["READERS", "Dataset", "Sample", "build_dataset"]
