"""ISBI-2012 EM membranes in the PNG layout `membrane/train/{image,label}/N.png`.

The challenge's test labels were never released, so only the 30 labelled slices are listed.
"""
from medrun.data.paired import paired_dataset
from medrun.data.samples import READERS, require_dir


@READERS.register("isbi2012")
def read_isbi(cfg):
    root = require_dir(cfg.root, "data.root", " (the folder holding membrane/train/image and membrane/train/label)")
    train = root / "membrane" / "train"
    dataset = paired_dataset(cfg, [dict(image_dir=train / "image", mask_dir=train / "label")])
    dataset.ordered = True  # 30 consecutive sections of one volume: k-fold holds out contiguous blocks
    return dataset
