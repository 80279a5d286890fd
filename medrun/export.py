"""`medrun export`: a finished run's model as ONNX or TorchScript for serving stacks, with `serving.json` saying
what a caller must do before (reading, resizing, normalising) and after (the stored post-processing decision).

The exported graph takes a preprocessed float32 batch (N, C, H, W) at the run's input size and returns the
task's probabilities; with `fold=ensemble` it averages the fold models inside. TTA is not inside (each
augmented pass is one more call). The cascade is one graph: segmenter and classifier both run, and the
segmenter's probabilities are set to zero where the classifier's probability of "mask present" is below the
stored decision threshold (channel 1 keeps that probability), so `threshold` + `min_area` on channel 0 give
the cascade's mask."""
from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from medrun.errors import MedrunError
from medrun.evaluation.decision import Decision
from medrun.inference import Run, load_run
from medrun.predict import choose_postprocessing
from medrun.runs import writable, write_json

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
TOLERANCE = 1e-4  # largest |exported - PyTorch| accepted on the check images (float32 probabilities)


class ServedModel(nn.Module):
    """Preprocessed batch -> mean probabilities of the chosen fold networks, with the task's serving head."""

    def __init__(self, run: Run, folds: list[int], decision: Decision):
        super().__init__()
        self.nets = nn.ModuleList([run.models[k].net for k in folds])
        self._task = (run.models[folds[0]],)  # a tuple: its probabilities() is used, its modules are not exported
        self.decision = decision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task = self._task[0]
        total = sum(task.probabilities(net(x).float()) for net in self.nets)
        return task.serving_output(total / len(self.nets), self.decision)


def _folds(run: Run, fold) -> list[int]:
    n = len(run.models)
    if fold in (None, "ensemble"):
        return list(range(n))
    try:
        k = int(fold)
    except (TypeError, ValueError):
        k = -1
    if not 0 <= k < n:
        raise MedrunError(f"fold={fold!r}; valid: ensemble or 0..{n - 1}")
    return [k]


def _culprit(model: nn.Module, example: torch.Tensor, attempt) -> str:
    """The first layer, in call order, that `attempt(module, inputs)` cannot export on its own: medrun's and
    timm's / smp's modules, innermost first; torch.nn's own layers are taken as exportable."""
    calls: list[tuple[str, nn.Module, tuple]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda m, args, out: calls.append((names[m], m, args)))
             for m in model.modules() if m is not model and not type(m).__module__.startswith("torch.nn")]
    try:
        with torch.inference_mode():
            model(example)
    except Exception:  # noqa: BLE001 - the layers called before a failure are still the candidates
        pass
    finally:
        for h in hooks:
            h.remove()
    tried = set()
    for name, module, args in calls[:50]:  # forward hooks fire innermost first
        if name in tried or not all(isinstance(a, torch.Tensor) for a in args):
            continue
        tried.add(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attempt(module, tuple(a.clone() for a in args))
        except Exception:  # noqa: BLE001 - any failure means "this layer does not export"
            return f"layer {name} ({type(module).__name__})"
    return "a step of the network outside its layers"


def _reason(e: Exception) -> str:
    """The operator the exporter lacks when it names one, else the error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{e}\n{e.__cause__ or ''}").strip()  # the exporter colours its messages
    op = re.search(r"torch\.ops\.(aten\.\w+)", text)
    if op:
        return f"no translation for the operator {op.group(1)}"
    return text.splitlines()[0][:200] if text else type(e).__name__


def _onnx_program(module: nn.Module, args: tuple, batch_dim: bool = False):
    shapes = {"x": {0: torch.export.Dim("batch", min=1)}} if batch_dim else None
    return torch.onnx.export(module, args, dynamo=True, input_names=["image"], output_names=["probabilities"],
                             verbose=False, dynamic_shapes=shapes)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = _onnx_program(model, (example,), batch_dim=True)
        except Exception as e:  # the exporter raises many types; each means "this graph cannot be exported"
            layer = _culprit(model, example, _onnx_program)
            raise MedrunError(f"format=onnx: {layer} cannot be exported ({_reason(e)}); "
                              "try format=torchscript") from None
        program.save(str(path))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    def trace(module, args):
        return torch.jit.trace(module, args, check_trace=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.export, which has no
        try:                             # loader outside Python; TorchScript still runs in libtorch (C++)
            traced = trace(model, example)
        except Exception as e:
            layer = _culprit(model, example, trace)
            raise MedrunError(f"format=torchscript: {layer} cannot be traced ({_reason(e)}); "
                              "try format=onnx") from None
    traced.save(str(path))


def _load_exported(path: Path, format: str):
    """The exported file as a function of a float32 NumPy batch, run outside medrun's model code."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"image": x})[0]
    module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def check_images(run: Run, n: int = 4) -> torch.Tensor:
    """`n` of the run's own images, preprocessed as in training: what the numerical check runs on."""
    from medrun.data.build import build_store

    store = build_store(run.config, preload=False)
    ds = run.dataset(store, [s.id for s in store.samples][:n])
    return torch.stack([ds[i]["image"].float() for i in range(len(ds))])


def _check_output(out: Path) -> None:
    """`output=` must be a new or empty real folder that can be written (a symlink, even a dangling one, is not)."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise MedrunError(f"output={out} exists and is not an empty folder: choose a new one (exports are never "
                          "overwritten)")
    writable(out, "output")


def export_run(run_dir, format: str = "onnx", fold="ensemble", output=None, postprocessing: str | None = None,
               allow_unsafe_checkpoints: bool = False, images: torch.Tensor | None = None) -> dict:
    """Write the run's model (`format` onnx | torchscript; `fold` k or ensemble) and serving.json to `output`
    (a new folder; default <run>/export/<time>_<format>_<fold>), after checking that the exported model gives
    PyTorch's probabilities on `images` (default: a few of the run's own, preprocessed). Returns serving.json."""
    if format not in FORMATS:
        raise MedrunError(f"format={format!r}; valid: {', '.join(FORMATS)}")
    if output:  # checked before the model is loaded: a bad folder fails at once
        _check_output(Path(str(output)).expanduser())
    run = load_run(run_dir, device="cpu", allow_unsafe_checkpoints=allow_unsafe_checkpoints)
    folds = _folds(run, fold)
    label = "ensemble" if len(folds) > 1 else f"fold{folds[0]}"
    out = Path(str(output)).expanduser() if output else run.dir / "export" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{format}_{label}"
    _check_output(out)
    chosen, decision_from = choose_postprocessing(run.dir, postprocessing)
    cfg = run.config
    decision = Decision.read(chosen, cfg)
    model = ServedModel(run, folds, decision).eval()
    images = check_images(run) if images is None else images
    with torch.inference_mode():
        expected = model(images).numpy()
    out.mkdir(parents=True, exist_ok=True)
    path = out / FORMATS[format]
    (_export_onnx if format == "onnx" else _export_torchscript)(model, images[:1].clone(), path)
    got = _load_exported(path, format)(images.numpy().astype(np.float32))
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        path.unlink()
        raise MedrunError(f"the exported {format} model differs from PyTorch by {difference:.2g} (> {TOLERANCE}) "
                          f"on {len(images)} of the run's images; nothing was kept in {out}")
    h, w = (int(v) for v in cfg.data.image_size)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    serving = {
        "model": path.name, "format": format, "folds": folds, "task": str(cfg.task.name),
        "input": {"name": "image", "shape": ["N", int(cfg.data.channels), h, w], "dtype": "float32",
                  "read": {"channels": data["channels"], "dicom": data.get("dicom") or {}},
                  "resize": {"size": [h, w], "interpolation": "bilinear",
                             "pad_to_square": bool(data.get("pad_to_square"))},
                  "normalize": {"albumentations.Normalize": data["normalize"]}},
        "output": {"name": "probabilities", "meaning": run.models[folds[0]].serving_meaning(cfg),
                   "classes": [str(c) for c in data.get("classes") or []]},
        "postprocessing": {"from": decision_from, **decision.stored(), "tta": f"not inside the model: {decision.tta}"},
        "check": {"images": len(images), "max_abs_difference": difference, "tolerance": TOLERANCE,
                  "against": "medrun's PyTorch model, onnxruntime CPU" if format == "onnx" else
                  "medrun's PyTorch model, torch.jit.load"},
    }
    write_json(out / "serving.json", serving)
    return {**serving, "folder": str(out)}
