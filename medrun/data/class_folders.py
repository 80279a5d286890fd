"""Classification from a class-per-subfolder directory: `<root>/<class>/<image>`."""
from medrun.data.images import CLASSIFICATION_SUFFIXES
from medrun.data.labelled import labelled_dataset
from medrun.data.samples import READERS, Sample, require_dir
from medrun.errors import MedrunError


@READERS.register("class_folders")
def read_class_folders(cfg):
    root = require_dir(cfg.root, "data.root", " (a folder with one subfolder of images per class)")
    classes = list(cfg.classes) if cfg.get("classes") else sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = []
    for k, name in enumerate(classes):
        folder = root / str(name)
        if not folder.is_dir():
            raise MedrunError(f"class folder {folder} does not exist (data.classes lists {name!r})")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in CLASSIFICATION_SUFFIXES)
        if not files:
            raise MedrunError(f"class folder {folder} holds no images")
        samples += [Sample(id=f"{name}_{p.stem}", image=p, label=k) for p in files]
    return labelled_dataset(samples, cfg, classes, multilabel=False)
