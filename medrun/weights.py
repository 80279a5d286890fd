"""`medrun weights fetch|list` and `medrun list experiments`' status columns: which pretrained weights each
experiment asks for, and whether the libraries' caches (HF_HOME, TORCH_HOME) hold them."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from medrun.config import CONFIG_DIR, compose, options
from medrun.errors import MedrunError
from medrun.models.pretrained import LIBRARIES, Weights, obtain, requested


def experiment_weights(overrides: list[str]) -> list[Weights]:
    """The pretrained weights the train config of `overrides` asks for without a local file."""
    return requested(compose("train", overrides, required=False).model)


def fetch_weights(overrides: list[str]) -> list[tuple[Weights, Path]]:
    """Fills the caches for `library=L name=N`, or for train overrides where experiment=a,b names several
    experiments; returns each set of weights with its cached file."""
    opts = dict(o.partition("=")[::2] for o in overrides)
    if "library" in opts or "name" in opts:
        if set(opts) != {"library", "name"} or opts["library"] not in LIBRARIES:
            raise MedrunError(f"give library=<{'|'.join(LIBRARIES)}> name=<weights>, or experiment=<name>")
        wanted = [[Weights(opts["library"], opts["name"])]]
    else:
        rest = [o for o in overrides if not o.startswith("experiment=")]
        experiments = opts.get("experiment", "").split(",") if opts.get("experiment") else [None]
        wanted = [experiment_weights(([f"experiment={e}"] if e else []) + rest) for e in experiments]
    done: dict[tuple[str, str], tuple[Weights, Path]] = {}
    for weights in (w for group in wanted for w in group):
        if (weights.library, weights.name) not in done:
            done[weights.library, weights.name] = (weights, obtain(weights))
    return list(done.values())


def experiment_needs() -> dict[tuple[str, str], list[str]]:
    """(library, name) of every set of pretrained weights a packaged experiment asks for -> those experiments."""
    needs: dict[tuple[str, str], list[str]] = {}
    for name in options("experiment"):
        for weights in experiment_weights([f"experiment={name}"]):
            needs.setdefault((weights.library, weights.name), []).append(name)
    return needs


def list_weights() -> list[dict]:
    """Each set of weights the packaged experiments ask for: its cached file and size (or None) and who needs it."""
    found = []
    for (library, name), experiments in sorted(experiment_needs().items()):
        path = Weights(library, name).cached_file()
        found.append({"library": library, "name": name, "file": str(path) if path else None,
                      "megabytes": round(path.stat().st_size / 2**20, 1) if path else None,
                      "experiments": experiments})
    return found


def experiment_dataset(name: str) -> str | None:
    """The data config an experiment picks (its `override /data:`), or None."""
    for entry in OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml").get("defaults") or []:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for key, value in entry.items():
                if str(key).removeprefix("override ").strip() == "/data":
                    return str(value)
    return None


def experiment_status(name: str) -> dict:
    """What experiment `name` needs before it can run: its dataset (and whether its default data.root exists) and
    its pretrained weights (and whether they are cached)."""
    cfg = compose("train", [f"experiment={name}"], required=False)
    root = cfg.data.get("root")
    if str(cfg.data.reader).startswith("synthetic"):
        data = "built in"
    elif root is None:
        data = "give data.root"
    else:
        data = "present" if Path(str(root)).expanduser().exists() else f"missing ({root})"
    weights = requested(cfg.model)
    missing = [w.name for w in weights if w.cached_file() is None]
    return {"dataset": experiment_dataset(name) or str(cfg.data.get("reader")), "data": data,
            "weights": "none" if not weights else "cached" if not missing else f"missing: {', '.join(missing)}"}
