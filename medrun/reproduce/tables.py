"""Paper tables as data: `configs/reproduce/<table>.yaml`, in the model-index form of mmsegmentation's metafiles
(`Models: - Name, Results: [{Task, Dataset, Metrics}]`) plus what medrun needs to re-measure each row."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medrun.config import CONFIG_DIR
from medrun.errors import MedrunError
from medrun.models.pretrained import LIBRARIES

TABLE_DIR = CONFIG_DIR / "reproduce"
REFERENCE = "reference: a published baseline that medrun does not run"  # the status of a row without experiment


@dataclass
class Metric:
    """One number of a paper's row: its value, spread and n as published, where medrun measures it under the
    paper's definition (`measure`) and under medrun's own (`medrun`, and further `also` definitions), the tolerance."""
    name: str
    paper: float | None
    std: float | None
    n: int | None
    measure: str               # a cv_summary mean key, or table/row/column of a cv_summary table (Table 5.1)
    tolerance: dict            # {"absolute": x} or {"relative": r}
    definition: str = ""       # what the paper computes, in words
    medrun: str | None = None  # medrun's own definition of the same quantity, shown beside it
    also: dict = field(default_factory=dict)   # label -> key: further definitions shown where they differ
    csv: dict = field(default_factory=dict)    # where the published value stands in ../shared/papers/<paper_csv>


@dataclass
class Row:
    name: str
    experiment: str | None     # None: a published baseline that medrun does not run (shown for reference)
    task: str
    dataset: str
    needs: list[str]
    overrides: list[str]
    quick: list[str]
    metrics: list[Metric]
    caveats: list[str] = field(default_factory=list)
    paper_row: dict = field(default_factory=dict)  # CSV columns -> values that pick this row's published numbers
    not_published: list[str] = field(default_factory=list)  # metrics the source leaves empty for this row
    input_sets: dict = field(default_factory=dict)  # input -> this row's own overrides for it (another config key)


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
    paper_csv: str | None = None       # the transcribed table in ../shared/papers this one is checked against
    published_with: str | None = None  # the protocol the published numbers came from
    relative_gains: list = field(default_factory=list)  # [{metric, base, improved, paper}]: gains quoted in the text
    paper_std: str = "sample"          # the published stds' form: sample (ddof=1) or population (np.std, ddof=0)

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
        p["only"] = _list(p.get("only"), f"protocols.{pname}.only")  # the experiments it applies to (empty: all)
    inputs = raw.get("inputs") or {}
    for key, spec in inputs.items():
        if not key.startswith(("data.", "weights.")):
            raise MedrunError(f"{path}: input {key!r} must be named data.<name> or weights.<name>")
        spec["sets"] = _list(need(spec, "sets", f"inputs.{key}."), f"inputs.{key}.sets")
        spec["quick_without"] = _list(spec.get("quick_without"), f"inputs.{key}.quick_without")
        # cached: {weights: "<library> <name>", sets: [...]}: a row given no file takes these weights from the
        # library's cache (fetched when online), with `sets` as its overrides
        cached = spec.get("cached")
        if cached is not None:
            weights = str(cached.get("weights", "")).split()
            if len(weights) != 2 or weights[0] not in LIBRARIES:
                raise MedrunError(f"{path}: inputs.{key}.cached.weights={cached.get('weights')!r}; give "
                                  f"'<{'|'.join(LIBRARIES)}> <weights name>'")
            cached["sets"] = _list(cached.get("sets"), f"inputs.{key}.cached.sets")
    defined = raw.get("metrics") or {}  # metric -> {definition, measure, medrun, also, tolerance, csv}
    published_with = raw.get("published_with")
    if published_with is not None and published_with not in protocols:
        raise MedrunError(f"{path}: published_with={published_with!r} is not a protocol; valid: {', '.join(protocols)}")
    rows = []
    for i, m in enumerate(need(raw, "Models", "")):
        where = f"Models[{i}]."
        results = need(m, "Results", where)
        result = results[0] if isinstance(results, list) else results
        spread, n, measure, tol, medrun = (m.get(k) or {} for k in ("Spread", "N", "measure", "tolerance", "medrun"))
        metrics = []
        prefix = str(m.get("measure_prefix") or "")  # fills "{prefix}" in the table's measure keys (Table 5.1)
        for metric, value in (need(result, "Metrics", f"{where}Results.") or {}).items():
            d = {k: v.replace("{prefix}", prefix) if isinstance(v, str) else v
                 for k, v in (defined.get(metric) or {}).items()}
            d["also"] = {k: v.replace("{prefix}", prefix) for k, v in (d.get("also") or {}).items()}
            t = tol.get(metric, tol.get("default", d.get("tolerance") or {}))
            if set(t) - {"absolute", "relative"}:
                raise MedrunError(f"{path}: {where}tolerance.{metric} takes absolute or relative, not {sorted(t)}")
            count = n.get(metric, n.get("default"))
            metrics.append(Metric(metric, None if value is None else float(value),
                                  None if spread.get(metric) is None else float(spread[metric]),
                                  None if count is None else int(count),
                                  str(measure.get(metric, d.get("measure", metric))), dict(t),
                                  str(d.get("definition", "")), medrun.get(metric, d.get("medrun")),
                                  dict(d.get("also") or {}), dict(d.get("csv") or {})))
        needs = _list(m.get("needs"), f"{where}needs")
        for key in needs:
            if key not in inputs:
                raise MedrunError(f"{path}: {where}needs {key!r}, which is not under inputs")
        experiment = m.get("experiment")
        rows.append(Row(str(need(m, "Name", where)), None if experiment is None else str(experiment),
                        str(result.get("Task", "")), str(result.get("Dataset", "")), needs,
                        _list(m.get("overrides"), f"{where}overrides"), _list(m.get("quick"), f"{where}quick"), metrics,
                        _list(m.get("caveats"), f"{where}caveats"), dict(m.get("paper_row") or {}),
                        _list(m.get("not_published"), f"{where}not_published"),
                        {k: _list(v, f"{where}input_sets.{k}") for k, v in (m.get("input_sets") or {}).items()}))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise MedrunError(f"{path}: Models[].Name must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    gains = raw.get("relative_gains") or []
    for g in gains:
        unknown = [g.get(k) for k in ("base", "improved") if g.get(k) not in names]
        if unknown or "metric" not in g:
            raise MedrunError(f"{path}: relative_gains entry {g} needs metric, base and improved naming rows; "
                              f"unknown: {unknown}")
    paper_std = str(raw.get("paper_std", "sample"))
    if paper_std not in ("sample", "population"):
        raise MedrunError(f"{path}: paper_std={paper_std!r}; valid: sample, population")
    return Table(path.stem, str(need(raw, "Title", "")), str(need(raw, "Source", "")), protocols, inputs,
                 _list(raw.get("quick"), "quick"), rows, path, raw.get("paper_csv"), published_with, gains, paper_std)


def published_cells(table: Table, row: Row) -> dict:
    """metric -> {"value", "std", "n"}: the CSV columns holding `row`'s published numbers, with the metric's scale
    and the CSV row it comes from (`match`); empty for a row that transcribes no published row."""
    if not row.paper_row:
        return {}
    return {m.name: {**{k: m.csv.get(k) for k in ("value", "std", "n")}, "scale": float(m.csv.get("scale", 1.0)),
                     "match": {**row.paper_row, **(m.csv.get("match") or {})}} for m in row.metrics if m.csv}


def describe(table: Table) -> str:
    """`medrun reproduce list`'s entry for one table: rows, the inputs each needs, and transcribed values."""
    # the numbers the source publishes: means and stds of its rows (per its CSV columns) and the gains it quotes
    slots = [v for r in table.rows if r.paper_row for m in r.metrics if m.name not in r.not_published
             for v, published in ((m.paper, "value" in m.csv), (m.std, "std" in m.csv)) if published or v is not None]
    slots += [g.get("paper") for g in table.relative_gains]
    known = sum(v is not None for v in slots)
    lines = [f"{table.key}: {table.title}", f"  source: {table.source}",
             f"  protocols: {', '.join(table.protocols)}"
             + (f" (published numbers: {table.published_with})" if table.published_with else "")
             + f"; paper values: {known} of {len(slots)}"]
    for r in table.rows:
        run = f"experiment={r.experiment}" if r.experiment else "published baseline, not run by medrun"
        lines.append(f"  - {r.name} [{r.dataset}] {run}; needs: {', '.join(r.needs) or 'nothing'}")
    for key, spec in table.inputs.items():
        lines.append(f"    {key}=<path>: {spec.get('published', '')}")
    return "\n".join(lines)
