"""Classification from a class-per-subfolder directory: `<root>/<class>/<image>`, images possibly in subfolders
of their class folder (e.g. one per patient)."""
import logging

from medrun.data.images import CLASSIFICATION_SUFFIXES, listed
from medrun.data.labelled import labelled_dataset
from medrun.data.samples import READERS, Sample, require_dir
from medrun.errors import MedrunError

log = logging.getLogger("medrun")


@READERS.register("class_folders")
def read_class_folders(cfg):
    root = require_dir(cfg.root, "data.root", " (a folder with one subfolder of images per class)")
    classes = list(cfg.classes) if cfg.get("classes") else \
        sorted(d.name for d in root.iterdir() if d.is_dir() and listed(d, root))
    samples, others = [], []
    for k, name in enumerate(classes):
        folder = root / str(name)
        if not folder.is_dir():
            raise MedrunError(f"class folder {folder} does not exist (data.classes lists {name!r})")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and listed(p, folder))
        images = [p for p in files if p.suffix.lower() in CLASSIFICATION_SUFFIXES]
        others += [p for p in files if p.suffix.lower() not in CLASSIFICATION_SUFFIXES]
        if not images:
            raise MedrunError(f"class folder {folder} holds no images ({', '.join(CLASSIFICATION_SUFFIXES)})")
        for p in images:
            rel = p.relative_to(folder)
            sid = f"{name}_{'_'.join(rel.with_suffix('').parts)}"
            # a subfolder's name is its group in every class folder: one patient's images of two classes too
            group = (rel.parts[0] if len(rel.parts) > 1 else sid) if cfg.get("group_by_subfolder") else None
            samples.append(Sample(id=sid, image=p, label=k, group=group))
    if others:
        log.info("class folders: %d file(s) that are not images left out, e.g. %s", len(others), others[0])
    return labelled_dataset(samples, cfg, classes, multilabel=False)
