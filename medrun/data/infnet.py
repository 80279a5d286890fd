"""COVID-19 CT segmentation in the Inf-Net layout, with its fixed train/test split.

`data.variant=binary` reads LungInfection (masks {0,255}); `multiclass` reads MultiClassInfection
(palette masks {0 background, 1 ground-glass, 2 consolidation}). Image (.jpg) and mask (.png)
share the stem; ids are prefixed with the subset because both subsets number from 0.
"""
from medrun.data.paired import paired_dataset
from medrun.data.samples import READERS, require_dir
from medrun.errors import MedrunError

LAYOUT = {
    "binary": ("TrainingSet/LungInfection-Train/Doctor-label", "TestingSet/LungInfection-Test"),
    "multiclass": ("TrainingSet/MultiClassInfection-Train", "TestingSet/MultiClassInfection-Test"),
}


@READERS.register("infnet")
def read_infnet(cfg):
    root = require_dir(cfg.root, "data.root", " (the folder holding Dataset/TrainingSet and Dataset/TestingSet)")
    if (root / "Dataset").is_dir():
        root = root / "Dataset"
    if cfg.variant not in LAYOUT:
        raise MedrunError(f"data.variant={cfg.variant!r}; valid: {', '.join(LAYOUT)}")
    train, test = (root / part for part in LAYOUT[cfg.variant])
    return paired_dataset(cfg, [
        dict(image_dir=train / "Imgs", mask_dir=train / "GT", id_prefix="train_", subset="train"),
        dict(image_dir=test / "Imgs", mask_dir=test / "GT", id_prefix="test_", subset="test"),
    ])
