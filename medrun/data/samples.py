"""What a dataset reader returns: samples with stable ids, and the reader registry."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from medrun.errors import MedrunError
from medrun.registry import Registry


@dataclass(frozen=True)
class Sample:
    """One image (and mask); `id` is derived from the file name and keys splits and predictions."""

    id: str
    image: Path | None = None
    mask: Path | None = None
    group: str | None = None  # video sequence or patient: never split across train and test
    subset: str | None = None  # "test" when the dataset ships a fixed test set
    label: Any = None  # class label, for stratified splits
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Dataset:
    """A listed dataset: its samples and how to decode one into (image HxWxC, target).

    The target is a mask of class indices (HxW) for segmentation, a class index or a multi-hot
    vector for classification.
    """

    samples: list[Sample]
    load: Callable[[Sample], tuple[Any, Any]]
    kind: str = "segmentation"
    ordered: bool = False  # consecutive sections of one volume: k-fold holds out contiguous blocks
    classes: list[str] | None = None  # classification: the class names found in the data
    multilabel: bool = False

    def __post_init__(self):
        counts = Counter(s.id for s in self.samples)
        if len(counts) != len(self.samples):
            dup = sorted(i for i, n in counts.items() if n > 1)[:5]
            files = [str(s.image) for s in self.samples if s.id == dup[0] and s.image is not None]
            raise MedrunError(f"duplicate sample ids {dup}" + (f" ({' and '.join(files)})" if files else "")
                              + ": file stems must be unique within a dataset; rename or remove one")


READERS: Registry[Callable[[DictConfig], Dataset]] = Registry("dataset reader", "data.reader")
# readers whose listing is slow (a header per file) give their `load` on its own, so that data.cache=disk can
# store the listing and a later run can skip it: reader name -> (data config) -> load(sample)
LOADERS: Registry[Callable[[DictConfig], Callable]] = Registry("stored-listing loader", "data.reader")


def require_dir(path: str | Path | None, key: str, hint: str = "") -> Path:
    """Return `path` as a Path, or fail naming the config key when it is unset or missing."""
    if path in (None, "", "???"):
        raise MedrunError(f"{key} is not set: pass {key}=/path/to/data{hint}")
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        raise MedrunError(f"{key}={p} does not exist or is not a folder{hint}")
    return p


_COLLECTED: ContextVar[list | None] = ContextVar("medrun_collected_problems", default=None)


def problem(message: str) -> None:
    """A bad sample found while listing: an error, or noted and skipped inside `collecting_problems()`."""
    collected = _COLLECTED.get()
    if collected is None:
        raise MedrunError(message)
    collected.append(message)


@contextmanager
def collecting_problems():
    """Within this block readers note bad samples instead of stopping at the first (medrun data check)."""
    found: list[str] = []
    token = _COLLECTED.set(found)
    try:
        yield found
    finally:
        _COLLECTED.reset(token)
