"""Pretrained weights through the libraries' caches: resolution, offline use and messages, a local file winning,
and `medrun weights fetch` against a local Hugging Face mirror (never the network)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import medrun
from medrun.errors import MedrunError
from medrun.models import build_network
from medrun.models.classifiers import VGGGAP, timm_classifier, vgg_features
from medrun.models.encoder_unet import EncoderUNet
from medrun.models.pretrained import Weights, ensure_cached, requested

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches():
    """The tests' own HF and torch caches (tests/conftest.py), emptied after each test."""
    yield Path(constants.HF_HUB_CACHE), Path(torch.hub.get_dir())
    for folder in (Path(constants.HF_HUB_CACHE), Path(torch.hub.get_dir())):
        shutil.rmtree(folder, ignore_errors=True)


def put_in_hub_cache(repo: str, file: str, state: dict, revision: str | None = None) -> Path:
    """A file in the Hugging Face cache layout, as hf_hub_download leaves it (refs/main -> snapshot)."""
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / (revision or COMMIT)
    snapshot.mkdir(parents=True, exist_ok=True)
    if revision is None:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(COMMIT)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / file))
    return snapshot / file


def test_timm_weights_load_from_the_cache_offline_and_a_local_file_wins(caches, tmp_path):
    import timm

    source = timm.create_model("resnet18", num_classes=1000).state_dict()
    cached = put_in_hub_cache("timm/resnet18.a1_in1k", "model.safetensors", source)
    assert Weights("timm", "resnet18.a1_in1k").cached_file() == cached
    model = timm_classifier("resnet18", 1, 2, pretrained="a1_in1k")
    assert torch.equal(model.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])
    # timm adapts the 3-channel stem to one channel (the sum over colours) and drops the 1000-class head
    assert torch.allclose(model.conv1.weight, source["conv1.weight"].sum(1, keepdim=True))
    assert model.fc.out_features == 2
    other = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.items()}
    torch.save(other, tmp_path / "mine.pth")
    mine = timm_classifier("resnet18", 3, 2, pretrained="a1_in1k", weights_path=str(tmp_path / "mine.pth"))
    assert torch.equal(mine.layer1[0].conv1.weight, other["layer1.0.conv1.weight"])


def test_smp_and_torchvision_weights_come_from_their_caches(caches):
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    source = EncoderUNet(3, 1, "resnet18").net.encoder.state_dict()
    put_in_hub_cache(settings["repo_id"], "model.safetensors", source, revision=settings["revision"])
    unet = EncoderUNet(1, 1, "resnet18", encoder_weights="imagenet")  # smp adapts the stem to one channel
    assert torch.equal(unet.net.encoder.layer2[0].conv1.weight, source["layer2.0.conv1.weight"])
    assert unet.net.encoder.conv1.weight.shape[1] == 1 and unet(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)

    features = {f"features.{k}": v for k, v in vgg_features("vgg16").state_dict().items()}
    (caches[1] / "checkpoints").mkdir(parents=True)
    torch.save(features, caches[1] / "checkpoints" / "vgg16-397923af.pth")  # torchvision's file name
    model = VGGGAP(3, 2, pretrained="imagenet")
    assert torch.equal(model.features[0].weight, features["features.0.weight"])


def test_offline_without_the_cache_a_run_stops_before_reading_data(caches, tmp_path):
    cfg = medrun.compose("train", ["experiment=cascade_siim", f"data.root={tmp_path / 'never_read'}",
                                   f"paths.output_dir={tmp_path / 'out'}"])
    with pytest.raises(MedrunError) as e:
        medrun.train(cfg)
    message = str(e.value)
    assert message.startswith("model.classifier.pretrained: the timm weights resnext50_32x4d.tv_in1k are not in ")
    assert "medrun weights fetch library=timm name=resnext50_32x4d.tv_in1k" in message
    assert "model.classifier.weights_path=/path/to/file" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # no run folder either
    from medrun.weights import fetch_weights

    with pytest.raises(MedrunError, match=r"^pretrained: the timm weights resnet18.a1_in1k are not in .* downloads "
                                          r"are off \(HF_HUB_OFFLINE=1\)"):
        fetch_weights(["library=timm", "name=resnet18.a1_in1k"])
    with pytest.raises(MedrunError, match=r"give library=<timm\|smp\|torchvision> name=<weights>"):
        fetch_weights(["library=keras", "name=vgg16"])


def test_unknown_weights_names_list_the_valid_ones():
    cfg = medrun.compose("train", ["experiment=densenet121_folder", "data.root=x", "model.pretrained=in22k"])
    with pytest.raises(MedrunError, match="timm has no pretrained weights 'densenet121.in22k'; valid tags for "
                                          "densenet121: ra_in1k, tv_in1k"):
        requested(cfg.model)
    cfg = medrun.compose("train", ["experiment=unet_vgg16_cvc", "data.root=x", "model.encoder_weights=in21k"])
    with pytest.raises(MedrunError, match="smp has no 'in21k' weights for encoder vgg16; valid: imagenet"):
        requested(cfg.model)
    with pytest.raises(MedrunError, match=r"model.pretrained='yes'; valid: imagenet"):
        VGGGAP(3, 2, pretrained="yes")


def test_weights_list_and_experiment_status_show_what_is_cached(caches):
    from medrun.weights import experiment_status, list_weights

    assert experiment_status("cascade_siim") == {
        "dataset": "siim_acr", "data": "give data.root",
        "weights": "missing: resnext50_32x4d.tv_in1k, resnet34.imagenet"}
    put_in_hub_cache("timm/resnext50_32x4d.tv_in1k", "model.safetensors", {"w": torch.zeros(512, 512)})  # 1 MiB
    listed = {w["name"]: w for w in list_weights()}
    assert listed["resnext50_32x4d.tv_in1k"]["megabytes"] == 1.0 and listed["resnet34.imagenet"]["file"] is None
    assert listed["resnet34.imagenet"]["experiments"] == ["cascade_siim", "unet_resnet34_siim"]
    assert listed["densenet121.tv_in1k"]["experiments"] == ["densenet121_folder", "densenet121_multilabel"]
    assert experiment_status("cascade_siim")["weights"] == "missing: resnet34.imagenet"
    assert experiment_status("quickstart") == {"dataset": "synthetic", "data": "built in", "weights": "none"}


class _Mirror(BaseHTTPRequestHandler):
    """The Hugging Face hub's file endpoint (/<repo>/resolve/<revision>/<file>) over files made here."""
    files: dict[str, bytes] = {}
    asked: list[str] = []

    def _answer(self, body: bool):
        repo_file = self.path.split("?")[0].lstrip("/")
        repo, _, rest = repo_file.partition("/resolve/")
        revision, _, file = rest.partition("/")
        data = self.files.get(f"{repo}/{file}")
        self.asked.append(f"{self.command} {repo}/{file}")
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", revision if len(revision) == 40 else COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_weights_fetch_fills_the_caches_from_a_mirror_and_an_offline_run_uses_them(caches, tmp_path):
    import timm
    from safetensors.torch import save
    from segmentation_models_pytorch.encoders import encoders

    classifier = timm.create_model("resnet18").state_dict()
    encoder = EncoderUNet(3, 1, "resnet18").net.encoder.state_dict()
    _Mirror.files = {"timm/resnet18.a1_in1k/model.safetensors": save(classifier),
                     "smp-hub/resnet18.imagenet/model.safetensors": save(encoder),
                     "smp-hub/resnet18.imagenet/config.json": b"{}"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    overrides = ["experiment=cascade_siim", "model.classifier.backbone=resnet18", "model.classifier.pretrained=a1_in1k",
                 "model.segmenter.encoder=resnet18"]
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "HF_HUB_DISABLE_XET": "1", "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run([sys.executable, "-m", "medrun.cli", "weights", "fetch", *overrides], env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert "GET timm/resnet18.a1_in1k/model.safetensors" in _Mirror.asked
    assert "GET smp-hub/resnet18.imagenet/model.safetensors" in _Mirror.asked
    assert f"timm resnet18.a1_in1k: {constants.HF_HUB_CACHE}/models--timm--resnet18.a1_in1k/snapshots/" in done.stdout
    # the copied cache serves an offline build (this process is offline): the mirror's tensors, not fresh ones
    cfg = medrun.compose("train", [*overrides, "data.root=x"])
    net = build_network(cfg.model, 3, 1)
    assert torch.equal(net.classifier.layer1[0].conv1.weight, classifier["layer1.0.conv1.weight"])
    assert torch.equal(net.segmenter.net.encoder.layer1[0].conv1.weight, encoder["layer1.0.conv1.weight"])
    revision = encoders["resnet18"]["pretrained_settings"]["imagenet"]["revision"]
    assert Weights("smp", "resnet18.imagenet").cached_file().parent.name == revision
    assert ensure_cached(cfg.model) == [Weights("timm", "resnet18.a1_in1k").cached_file(),
                                        Weights("smp", "resnet18.imagenet").cached_file()]  # what train() checks first
