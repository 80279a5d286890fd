"""Paper tables as data: `configs/reproduce/<table>.yaml`, in the model-index form of mmsegmentation's metafiles
(`Models: - Name, Results: [{Task, Dataset, Metrics}]`) plus what medrun needs to re-measure each row."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medrun.config import CONFIG_DIR
from medrun.errors import MedrunError

TABLE_DIR = CONFIG_DIR / "reproduce"


@dataclass
class Metric:
    """One number of a paper's row: its value, spread and n as published, where medrun measures it, the tolerance."""
    name: str
    paper: float | None
    std: float | None
    n: int | None
    measure: str               # a cv_summary mean key, or table/row/column of a cv_summary table (Table 5.1)
    tolerance: dict            # {"absolute": x} or {"relative": r}


@dataclass
class Row:
    name: str
    experiment: str
    task: str
    dataset: str
    needs: list[str]
    overrides: list[str]
    quick: list[str]
    metrics: list[Metric]
    caveats: list[str] = field(default_factory=list)


@dataclass
class Table:
    key: str
    title: str
    source: str
    protocols: dict            # name -> {"label", "overrides", "quick", "leaks"}
    inputs: dict               # data.<key> / weights.<key> -> {"sets": [override with {path}], "published": str}
    quick: list[str]
    rows: list[Row]
    path: Path

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


def table_names() -> list[str]:
    return sorted(p.stem for p in TABLE_DIR.glob("*.yaml"))


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MedrunError(f"{where} must be a list")
    return [str(v) for v in value]


def load_table(name_or_path: str) -> Table:
    """A shipped table by name (`medrun reproduce list`) or any table YAML by path; checked field by field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TABLE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise MedrunError(f"unknown table {name_or_path!r}; valid: {', '.join(table_names())} "
                              "(or the path of a table .yaml)")
    elif not path.is_file():
        raise MedrunError(f"table file {path} does not exist")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except (OmegaConfBaseException, ValueError) as e:
        raise MedrunError(f"{path}: not readable YAML ({' '.join(str(e).split())})") from None

    def need(d: dict, key: str, where: str):
        if key not in d or d[key] in (None, ""):
            raise MedrunError(f"{path}: {where}{key} is required")
        return d[key]

    protocols = need(raw, "protocols", "")
    if not isinstance(protocols, dict) or not protocols:
        raise MedrunError(f"{path}: protocols must map names to {{label, overrides}}")
    for pname, p in protocols.items():
        need(p, "label", f"protocols.{pname}.")
        need(p, "cv", f"protocols.{pname}.")
        p["overrides"], p["quick"] = _list(p.get("overrides"), f"protocols.{pname}.overrides"), \
            _list(p.get("quick"), f"protocols.{pname}.quick")
        p["leaks"] = bool(p.get("leaks", False))
    inputs = raw.get("inputs") or {}
    for key, spec in inputs.items():
        if not key.startswith(("data.", "weights.")):
            raise MedrunError(f"{path}: input {key!r} must be named data.<name> or weights.<name>")
        spec["sets"] = _list(need(spec, "sets", f"inputs.{key}."), f"inputs.{key}.sets")
    rows = []
    for i, m in enumerate(need(raw, "Models", "")):
        where = f"Models[{i}]."
        results = need(m, "Results", where)
        result = results[0] if isinstance(results, list) else results
        spread, n, measure, tol = (m.get(k) or {} for k in ("Spread", "N", "measure", "tolerance"))
        metrics = []
        for metric, value in (need(result, "Metrics", f"{where}Results.") or {}).items():
            t = tol.get(metric, tol.get("default", {}))
            if set(t) - {"absolute", "relative"}:
                raise MedrunError(f"{path}: {where}tolerance.{metric} takes absolute or relative, not {sorted(t)}")
            metrics.append(Metric(metric, None if value is None else float(value),
                                  None if spread.get(metric) is None else float(spread[metric]),
                                  None if n.get(metric, n.get("default")) is None else int(n.get(metric, n.get("default"))),
                                  str(measure.get(metric, metric)), dict(t)))
        needs = _list(m.get("needs"), f"{where}needs")
        for key in needs:
            if key not in inputs:
                raise MedrunError(f"{path}: {where}needs {key!r}, which is not under inputs")
        rows.append(Row(str(need(m, "Name", where)), str(need(m, "experiment", where)), str(result.get("Task", "")),
                        str(result.get("Dataset", "")), needs, _list(m.get("overrides"), f"{where}overrides"),
                        _list(m.get("quick"), f"{where}quick"), metrics, _list(m.get("caveats"), f"{where}caveats")))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise MedrunError(f"{path}: Models[].Name must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    return Table(path.stem, str(need(raw, "Title", "")), str(need(raw, "Source", "")), protocols, inputs,
                 _list(raw.get("quick"), "quick"), rows, path)


def describe(table: Table) -> str:
    """`medrun reproduce list`'s entry for one table: rows, the inputs each needs, and transcribed values."""
    values = [m for r in table.rows for m in r.metrics]
    known = sum(m.paper is not None for m in values)
    lines = [f"{table.key}: {table.title}", f"  source: {table.source}",
             f"  protocols: {', '.join(table.protocols)}; paper values transcribed: {known} of {len(values)}"]
    for r in table.rows:
        lines.append(f"  - {r.name} [{r.dataset}] experiment={r.experiment}; needs: {', '.join(r.needs) or 'nothing'}")
    for key, spec in table.inputs.items():
        lines.append(f"    {key}=<path>: {spec.get('published', '')}")
    return "\n".join(lines)
