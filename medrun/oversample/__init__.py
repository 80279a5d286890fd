"""Synthetic training data made inside a fold from its training part only: `oversample=` one of configs/oversample (none, duplicate, augment_5x, augment_10x, augment_5x_minority, augment_10x_minority, cyclegan, ...)."""
from medrun.oversample.fold import oversample_fold
from medrun.oversample.methods import OVERSAMPLERS

__all__ = ["OVERSAMPLERS", "oversample_fold"]
