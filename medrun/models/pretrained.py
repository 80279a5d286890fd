"""Pretrained weights the way their libraries ship them: timm and segmentation-models-pytorch through the Hugging
Face hub cache (HF_HOME), torchvision through its hashed URLs in TORCH_HOME. medrun downloads nothing itself:
`fetch` asks the owning library (which checks what it downloads), `cached_file` finds the library's cached copy,
`load` reads that copy with safetensors or weights_only=True. Offline (HF_HUB_OFFLINE=1) only the caches are used,
for every library."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig

from medrun.errors import MedrunError
from medrun.runs import read_state_dict

LIBRARIES = ("timm", "smp", "torchvision")
# the key that asks for pretrained weights -> the key of a local file, which wins over it
FILE_KEYS = {"pretrained": "weights_path", "encoder_weights": "encoder_weights_path",
             "discriminator_pretrained": "discriminator_weights_path"}


def without_weights(model: dict) -> dict:
    """A plain model config asking for no pretrained weights and no weight file, at any depth."""
    if isinstance(model, dict):
        return {k: None if k in FILE_KEYS or k in FILE_KEYS.values() else without_weights(v) for k, v in model.items()}
    return model


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights: `library` and its own `name` for them (timm "densenet121.tv_in1k", smp
    "resnet34.imagenet", torchvision "vgg16"); `key` is the config key that asked for them."""

    library: str
    name: str
    key: str = ""

    def _hub_files(self) -> list[tuple[str, str, str | None]]:
        """(repo, file, revision) candidates on the Hugging Face hub, in the order the library tries them."""
        if self.library == "smp":
            settings = _smp_settings(self.name)
            return [(settings["repo_id"], "model.safetensors", settings.get("revision"))]
        if self.library == "timm":
            cfg = _timm_cfg(self.name)
            if cfg.hf_hub_id:
                repo, _, revision = cfg.hf_hub_id.partition("@")
                files = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else \
                    ["model.safetensors", "pytorch_model.bin"]
                return [(repo, f, revision or None) for f in files]
        return []

    def _url(self) -> str | None:
        if self.library == "torchvision":
            return _torchvision_weights(self.name).url
        if self.library == "timm":
            return _timm_cfg(self.name).url or None
        return None

    def cached_file(self) -> Path | None:
        """The library's cached copy, or None when it is not cached."""
        from huggingface_hub import try_to_load_from_cache

        for repo, file, revision in self._hub_files():
            found = try_to_load_from_cache(repo, file, revision=revision)
            if isinstance(found, str):
                return Path(found)
        url = self._url()
        if url and not self._hub_files():
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
            return path if path.is_file() else None
        return None

    def where(self) -> str:
        """Where the library keeps (or would keep) these weights, for messages."""
        if self._hub_files():
            from huggingface_hub import constants

            repo = self._hub_files()[0][0]
            return f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}"
        return str(Path(torch.hub.get_dir()) / "checkpoints")

    def fetch(self) -> Path:
        """Downloads through the owning library into its cache (a cached copy is reused); returns the file."""
        if self.library == "timm":
            import timm

            timm.create_model(self.name, pretrained=True)
        elif self.library == "smp":
            from segmentation_models_pytorch.encoders import get_encoder

            encoder, _, weights = self.name.rpartition(".")
            get_encoder(encoder, weights=weights)
        else:
            _torchvision_weights(self.name).get_state_dict(progress=True, check_hash=True)
        path = self.cached_file()
        if path is None:
            raise MedrunError(f"{self.library} reported {self.name} fetched, but no copy is in {self.where()}")
        return path

    def load(self) -> dict[str, torch.Tensor]:
        """The cached weights as a state_dict; fails with the fetch command when they are not cached."""
        path = self.cached_file()
        if path is None:
            raise MedrunError(self.missing_message())
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return read_state_dict(path, self.key or self.name)

    def missing_message(self) -> str:
        parent, _, own = self.key.rpartition(".")
        file_key = f"{parent}.{FILE_KEYS[own]}" if own in FILE_KEYS else "the model's *weights_path key"
        return (f"{self.key or 'pretrained'}: the {self.library} weights {self.name} are not in {self.where()} and "
                f"downloads are off (HF_HUB_OFFLINE=1): run `medrun weights fetch library={self.library} "
                f"name={self.name}` (or `medrun weights fetch experiment=<name>`) on a connected machine and copy its "
                f"cache here, or give {file_key}=/path/to/file")


def _timm_cfg(name: str):
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # a tag the architecture has not
        cfg = None
    if cfg is None:
        arch = name.partition(".")[0]
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise MedrunError(f"timm has no pretrained weights {name!r}; valid tags for {arch}: "
                          f"{', '.join(tags) or 'none'}")
    return cfg


def _smp_settings(name: str) -> dict:
    from segmentation_models_pytorch.encoders import encoders

    encoder, _, weights = name.rpartition(".")
    settings = encoders.get(encoder, {}).get("pretrained_settings", {})
    if weights not in settings:
        raise MedrunError(f"smp has no {weights!r} weights for encoder {encoder}; valid: {', '.join(settings) or 'none'}")
    return settings[weights]


def _torchvision_weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).IMAGENET1K_V1


def timm_name(backbone: str, pretrained) -> str:
    """timm's name for `model.pretrained`: "imagenet" (or true) is the architecture's default ImageNet tag, any
    other value a timm tag (e.g. tv_in1k, torchvision's weights)."""
    if pretrained is True or str(pretrained) == "imagenet":
        return f"{backbone}.{_timm_cfg(backbone).tag}"
    return f"{backbone}.{pretrained}"


def pretrained_state(weights_path, weights: Weights | None, file_key: str) -> dict | None:
    """A local file's state_dict when one is given (it wins), else the cached library weights, else None."""
    if weights_path:
        return read_state_dict(weights_path, file_key)
    return weights.load() if weights else None


def only_imagenet(key: str, value) -> None:
    if value is not True and str(value) != "imagenet":
        raise MedrunError(f"{key}={value!r}; valid: imagenet (torchvision's ImageNet weights) or null")


def requested(model: DictConfig, prefix: str = "model.") -> list[Weights]:
    """The pretrained weights a model config asks for and gives no local file for (a cascade's parts too)."""
    name = model.get("name")
    if name == "cascade":
        return [w for part in ("classifier", "segmenter") for w in requested(model[part], f"{prefix}{part}.")]
    found = []
    if name == "timm" and model.get("pretrained") and not model.get("weights_path"):
        found.append(Weights("timm", timm_name(model.backbone, model.pretrained), f"{prefix}pretrained"))
    if name in ("vgg_gap", "ffvgg19") and model.get("pretrained") and not model.get("weights_path"):
        only_imagenet(f"{prefix}pretrained", model.pretrained)
        found.append(Weights("torchvision", "vgg16" if name == "vgg_gap" else "vgg19", f"{prefix}pretrained"))
    if name == "adversarial" and model.get("discriminator_pretrained") and not model.get("discriminator_weights_path"):
        only_imagenet(f"{prefix}discriminator_pretrained", model.discriminator_pretrained)
        found.append(Weights("torchvision", "vgg16_bn", f"{prefix}discriminator_pretrained"))
    if name == "smp_unet" and model.get("encoder_weights") and not model.get("encoder_weights_path"):
        found.append(Weights("smp", f"{model.encoder}.{model.encoder_weights}", f"{prefix}encoder_weights"))
    for weights in found:
        weights.cached_file()  # an unknown name fails here, with the valid choices
    return found


def obtain(weights: Weights) -> Path:
    """The cached copy of `weights`, or fetched now; offline, a missing one is a one-line error naming the fetch
    command."""
    from huggingface_hub import is_offline_mode

    path = weights.cached_file()
    if path is not None:
        return path
    if is_offline_mode():
        raise MedrunError(weights.missing_message())
    print(f"medrun: fetching the {weights.library} weights {weights.name} into {weights.where()}")
    try:
        return weights.fetch()
    except MedrunError:
        raise
    except Exception as e:  # network, proxy or disk errors, each library its own kind
        raise MedrunError(f"{weights.key or 'pretrained'}: fetching the {weights.library} weights {weights.name} "
                          f"failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); retry "
                          f"`medrun weights fetch library={weights.library} name={weights.name}`, or give a local "
                          "file") from None


def ensure_cached(model: DictConfig) -> list[Path]:
    """Every weights file `model` needs, from the cache or fetched now: run before any data is read."""
    return [obtain(weights) for weights in requested(model)]
