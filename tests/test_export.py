"""`medrun export`: ONNX and TorchScript models that give PyTorch's probabilities on real images, serving.json,
and clear refusals."""
import json

import numpy as np
import pytest
import torch

import medrun
from medrun.cli import main
from medrun.errors import MedrunError
from medrun.export import TOLERANCE, check_images, export_run
from medrun.inference import load_run

FAST = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "logger=none", "callbacks.progress=none",
        "cv=holdout", "html_report=false"]


def _real_runs(shared_data, out):
    """Tiny runs on real files: Sharp U-Net (CVC-ClinicDB), an smp ResNet U-Net (ISBI-2012), DenseNet121
    (BreastMNIST) and the One Case cascade (BUSI DICOMs)."""
    specs = {
        "sharp_unet": ["experiment=sharp_unet_cvc", f"data.root={shared_data}/cvc_clinicdb_sample/CVC-ClinicDB",
                       "data.image_size=[32,32]", "model.filters=[4,8,16,32,64]"],
        "smp_unet": ["experiment=unet_isbi", f"data.root={shared_data}/isbi2012", "data.image_size=[32,32]",
                     "model=smp_unet", "model.encoder=resnet18", "model.encoder_weights=null"],
        "densenet121": ["experiment=densenet121_breastmnist", f"data.root={shared_data}/medmnist",
                        "data.image_size=[32,32]", "model.pretrained=null", "data.batch_size=8"],
        "cascade": ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim", "data.image_size=[32,32]",
                    "model.classifier_size=[32,32]", "model.classifier.backbone=resnet18",
                    "model.segmenter.encoder=resnet18", "data.batch_size=8", "task.tta=none"],
    }
    return {name: medrun.train(medrun.compose("train", [*o, *FAST, f"paths.output_dir={out / name}"]))[0]
            for name, o in specs.items()}


@pytest.fixture(scope="module")
def runs(shared_data, module_tmp):
    return _real_runs(shared_data, module_tmp)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sharp_unet", "smp_unet", "densenet121", "cascade"])
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_exported_model_gives_pytorch_probabilities_on_real_images(runs, name, format, tmp_path):
    import onnxruntime

    serving = export_run(runs[name], format=format, output=tmp_path / "model")
    assert serving["check"]["max_abs_difference"] <= TOLERANCE
    on_disk = json.loads((tmp_path / "model" / "serving.json").read_text())
    assert on_disk["input"]["shape"][1:] == [int(v) for v in [on_disk["input"]["read"]["channels"],
                                                              *on_disk["input"]["resize"]["size"]]]
    # independently of export_run's own check: other real images, a batch size the export never saw
    run = load_run(runs[name], device="cpu")
    images = check_images(run, n=5)[-3:]
    expected = torch.stack([run.predict(images)]).squeeze(0).numpy()
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(tmp_path / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": images.numpy()})[0]
    else:
        got = torch.jit.load(str(tmp_path / "model" / "model.pt"))(images).detach().numpy()
    if name == "cascade":  # the blanking is inside the graph: channel 0 is zero where the classifier says empty
        blank = expected[:, 1].mean(axis=(1, 2)) < on_disk["postprocessing"]["decision_threshold"]
        expected[blank, 0] = 0
        assert "channel 0" in on_disk["output"]["meaning"]
    assert got.shape == expected.shape and np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.slow
def test_one_fold_and_the_cli(runs, tmp_path, capsys):
    assert main(["export", f"run={runs['sharp_unet']}", "format=onnx", "fold=0", f"output={tmp_path / 'one'}"]) == 0
    assert "exported folds [0] as onnx" in capsys.readouterr().out
    serving = json.loads((tmp_path / "one" / "serving.json").read_text())
    assert serving["folds"] == [0] and serving["input"]["normalize"]["albumentations.Normalize"]["max_pixel_value"] == 255
    with pytest.raises(MedrunError, match=r"fold=3; valid: ensemble or 0..0"):
        export_run(runs["sharp_unet"], fold=3, output=tmp_path / "x")
    with pytest.raises(MedrunError, match="exports are never overwritten"):
        export_run(runs["sharp_unet"], output=tmp_path / "one")
    with pytest.raises(MedrunError, match=r"format='tflite'; valid: onnx, torchscript"):
        export_run(runs["sharp_unet"], format="tflite")


@pytest.mark.slow
def test_a_layer_onnx_lacks_is_named(runs, tmp_path, monkeypatch):
    class Eigenvalues(torch.nn.Module):
        def forward(self, x):  # torch.linalg.eigvals has no ONNX translation
            return x + torch.linalg.eigvals(x[:, :, :4, :4]).real.mean()

    run_dir = runs["sharp_unet"]
    original = load_run

    def with_bad_layer(*args, **kwargs):
        run = original(*args, **kwargs)
        run.models[0].net.final_touch = Eigenvalues()
        forward = run.models[0].net.forward
        run.models[0].net.forward = lambda x: forward(run.models[0].net.final_touch(x))
        return run

    monkeypatch.setattr("medrun.export.load_run", with_bad_layer)
    with pytest.raises(MedrunError, match=r"format=onnx: layer nets.0.final_touch \(Eigenvalues\) cannot be exported \(no translation for the operator aten.linalg_eig\); try format=torchscript"):
        export_run(run_dir, format="onnx", output=tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.onnx").exists()


def test_a_bad_output_or_an_edited_config_fails_before_the_model_loads(tiny_run, tmp_path, monkeypatch):
    import shutil

    import medrun.export

    loaded = []
    monkeypatch.setattr(medrun.export, "load_run", lambda *a, **k: loaded.append(a) or 1 / 0)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for bad in (tmp_path / "dangling", "/proc/medrun-export"):
        with pytest.raises(MedrunError, match=r"output=.*(exists and is not an empty folder|is not writable|cannot "
                                              r"be created)"):
            export_run(tiny_run[0], output=bad)
    assert loaded == [] and not (tmp_path / "nowhere").exists()
    monkeypatch.undo()
    run = shutil.copytree(tiny_run[0], tmp_path / "run")
    config = (run / "config.yaml").read_text()
    assert "\nseed: " in config
    (run / "config.yaml").write_text(config.replace("\nseed: ", "\nseed: ${oc.env:MEDRUN_SECRET,1} #", 1))
    monkeypatch.setenv("MEDRUN_SECRET", "s3cr3t")
    with pytest.raises(MedrunError, match=r"config.yaml: seed is an interpolation \(\$\{oc.env:MEDRUN_SECRET,1\}\); "
                                          r"a run folder's config is written resolved"):
        export_run(run, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
