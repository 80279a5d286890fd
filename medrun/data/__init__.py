"""Dataset readers (one module per on-disk layout), splits, transforms and the fold datamodule."""
from omegaconf import DictConfig

from medrun.data import cvc, folders, infnet, isbi, synthetic  # noqa: F401  (register readers)
from medrun.data.samples import READERS, Dataset, Sample


def build_dataset(cfg: DictConfig) -> Dataset:
    """List the samples of the dataset described by the `data` config group."""
    return READERS.get(cfg.reader)(cfg)


__all__ = ["READERS", "Dataset", "Sample", "build_dataset"]
