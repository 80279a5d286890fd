"""Procedural, imbalanced classification data: the minority class shows a lesion, the rest do not."""
from medrun.data.labelled import labelled_dataset
from medrun.data.samples import READERS, Sample
from medrun.data.synthetic import make_sample


@READERS.register("synthetic_classes")
def read_synthetic_classes(cfg):
    size = tuple(int(v) for v in cfg.source_size)
    samples = []
    for i in range(int(cfg.count)):
        image, mask = make_sample(i, int(cfg.generator_seed), size, int(cfg.channels), 2,
                                  empty_fraction=1 - float(cfg.minority_fraction))
        samples.append(Sample(id=f"synth_{i:04d}", label=int(mask.any()), extra={"array": image}))
    return labelled_dataset(samples, cfg, list(cfg.classes), multilabel=False)
