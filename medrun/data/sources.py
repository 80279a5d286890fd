"""Where each dataset config's data is published, and `medrun data fetch`: MedMNIST through the medmnist package
(its URLs, MD5 checks and licence lines); for sets behind a registration or licence, where to get them and the
layout medrun reads (the data config's own description), then `data check` on what the user unpacked."""
from __future__ import annotations

from pathlib import Path

from medrun.errors import MedrunError

# data config -> where its data is published (the layout is the data config's leading comment)
PUBLISHED = {
    "medmnist": "MedMNIST v2 (Yang et al., Sci. Data 2023) on Zenodo, fetched by `medrun data fetch medmnist "
                "name=<set> size=28|64|128|224 root=<dir>` through the medmnist package",
    "siim_acr": "SIIM-ACR Pneumothorax Segmentation, a Kaggle competition (kaggle.com/c/siim-acr-pneumothorax-"
                "segmentation): a Kaggle account and the competition's rules; the DICOM training images and "
                "train-rle.csv",
    "busi_siim": "BUSI, the Breast Ultrasound Images Dataset (Al-Dhabyani et al., Data in Brief 2020), arranged in the "
                 "SIIM-ACR layout (PNG images, an RLE CSV) as ../shared/data/busi_siim is",
    "cvc_clinicdb": "CVC-ClinicDB (Bernal et al., 2015), polyp.grand-challenge.org/CVCClinicDB: the release's "
                    "Original/ and \"Ground Truth\"/ folders",
    "isbi2012": "the ISBI 2012 EM segmentation challenge's 30 training slices (brainiac2.mit.edu/isbi_challenge), "
                "as the U-Net reference code's data/membrane arranges them",
    "isic2016": "ISIC 2016 Challenge, Part 3 (challenge.isic-archive.com/data/#2016): the training images and "
                "ground-truth CSV, optionally the test set",
    "covid_ct": "the COVID-19 CT segmentation dataset (medicalsegmentation.com/covid19) as Inf-Net "
                "(github.com/DengPingFan/Inf-Net) arranges it",
    "covid_ct_multiclass": "the COVID-19 CT segmentation dataset (medicalsegmentation.com/covid19) as Inf-Net "
                           "(github.com/DengPingFan/Inf-Net) arranges it, with its multi-class masks",
    "dicom_contrast": "Kaggle's \"CT Medical Images\" (kmader/siim-medical-images): TCGA-LUAD CT slices, "
                      "overview.csv and dicom_dir/",
}
BUILT_IN = ("synthetic", "synthetic_classes")
MEDMNIST_SIZES = (28, 64, 128, 224)


def medmnist_file(name: str, size: int) -> str:
    """The file name the medmnist package gives a set at a size (breastmnist.npz, breastmnist_64.npz)."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def fetch_medmnist(name: str, size: int, root: str | Path) -> Path:
    """The MedMNIST 2D set `name` at `size` in `root`, through the medmnist package: a copy already there is kept
    when its MD5 matches; offline (HF_HUB_OFFLINE=1) nothing is downloaded. Returns the .npz file."""
    import medmnist
    from huggingface_hub import is_offline_mode
    from torchvision.datasets.utils import check_integrity

    sets = sorted(k for k, v in medmnist.INFO.items() if not v["python_class"].endswith("3D"))
    if name not in sets:
        raise MedrunError(f"name={name!r} is not a 2D MedMNIST set; valid: {', '.join(sets)}")
    if size not in MEDMNIST_SIZES:
        raise MedrunError(f"size={size}; valid: {', '.join(map(str, MEDMNIST_SIZES))}")
    info, flag = medmnist.INFO[name], "" if size == 28 else f"_{size}"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    path = root / medmnist_file(name, size)
    print(f"{name} ({size}x{size}): licence {info['license']}; published at {info['url' + flag]}")
    if not check_integrity(str(path), info["MD5" + flag]):
        if is_offline_mode():
            what = "does not match its MD5" if path.exists() else "is missing"
            raise MedrunError(f"{path} {what} and downloads are off (HF_HUB_OFFLINE=1): fetch it on a connected "
                              f"machine or download {info['url' + flag]} into {root}")
        try:  # the package downloads and checks the MD5 (and keeps a copy that already matches)
            getattr(medmnist, info["python_class"])(split="train", download=True, root=str(root), size=size)
        except RuntimeError as e:
            raise MedrunError(f"the medmnist package could not fetch {path.name}: "
                              f"{' '.join(str(e).split())[:300]}") from None
    return path


def describe_source(name: str) -> str:
    """Where data config `name`'s data is published and the layout medrun reads."""
    from medrun.config import CONFIG_DIR, options

    if name not in options("data"):
        raise MedrunError(f"unknown data {name!r}; valid: {', '.join(options('data'))}")
    lines = (CONFIG_DIR / "data" / f"{name}.yaml").read_text().splitlines()
    leading = lines[:next((k for k, line in enumerate(lines) if not line.startswith("#")), len(lines))]
    layout = " ".join(line.lstrip("# ").strip() for line in leading if "@package" not in line)
    if name in BUILT_IN:
        return f"{name}: generated by medrun, nothing to fetch. {layout}"
    where = PUBLISHED.get(name, "your own data: nothing to fetch")
    return f"{name}: {where}.\nlayout: {layout}"
