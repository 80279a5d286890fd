"""Synthetic training data made inside a fold from its training part only: `oversample=none|duplicate|cyclegan`."""
from medrun.oversample.registry import OVERSAMPLERS, oversample_fold

__all__ = ["OVERSAMPLERS", "oversample_fold"]
