"""Generic layout: `<root>/<images>/NAME.ext` with `<root>/<masks>/NAME<mask_suffix>.ext` (any image extension)."""
from medrun.data.paired import paired_dataset
from medrun.data.samples import READERS, require_dir


@READERS.register("folders")
def read_folders(cfg):
    root = require_dir(cfg.root, "data.root")
    return paired_dataset(cfg, [dict(image_dir=root / cfg.images, mask_dir=root / cfg.masks,
                                     mask_suffix=str(cfg.get("mask_suffix") or ""))])
