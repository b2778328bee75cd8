"""Experiment specs: one TOML file per paper artifact under ``experiments/``.

A spec is data, read with :mod:`tomllib` and validated here into typed objects. Every
error names the file, the row and the field. Layout of a spec file::

    [experiment]
    id = "table2b"             # the file name without .toml
    kind = "table"             # or "figure"
    paper_ref = "Table 2(b)"
    title = "..."
    split = "minival"          # or "test-dev"
    recipe = "gfl"             # default recipe of the rows (gfl_repro.specs.recipes)
    metrics = ["AP", "AP50", ...]   # printed metric columns, in order
    info_columns = ["n", "Δ"]      # printed descriptive columns, in order
    groups = ["FCOS", "ATSS"]      # column groups, when the paper groups columns
    uses = ["table4"]              # figures drawing on another experiment's rows

    [[row]]
    label = "n = 12"           # as printed (citation markers dropped)
    group = "..."              # one of groups, when the table has groups
    section = "..."            # a printed row section (Table 4)
    recipe = "..."             # overrides the experiment's recipe
    overrides = { reg_max = 12 }   # RunConfig fields changed from the recipe
    info = { n = "12", "Δ" = "1" } # the printed descriptive cells
    paper = [40.1, 58.4, ...]      # printed numbers in `metrics` order; "n/a" where printed so
    notes = { FPS = "..." }        # footnotes on printed numbers
    reference = false          # true: a paper number only, never run (Table 4's other methods)
    train = true               # false: analysed without training (Fig. 5c)

    [[artifact]]               # figures: what is drawn and from which rows
    name = "score_scatter"
    analysis = "score_vs_iou"
    rows = ["IoU-branch", "joint w/ QFL"]

    [[claim]]                  # what the paper concludes from the table (report.claims checks it)
    kind = "greater"           # greater (a > b), order (rows, best first), best (row beats rows),
    a = "ATSS + QFL + DFL"     #   flat (rows within `within` of each other)
    b = "ATSS"
    metric = "AP"              # default AP

Rows are named by their display name: "group / label" in grouped tables, the label
otherwise; rows sharing a label get the first info value that tells them apart
("GFL (ours) R-101-DCN").
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run_config import ARITHMETIC, RunConfig, check_consistency, check_field, run_id
from .profiles import Profile, apply_profile
from .recipes import RECIPES

KINDS = ("table", "figure")
CLAIM_KINDS = ("greater", "order", "best", "flat")
SPLITS = ("minival", "test-dev")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "FPS")
ANALYSES = (
    "score_vs_iou",
    "predicted_distributions",
    "qfl_curves",
    "distribution_shapes",
    "regression_targets",
    "speed_vs_accuracy",
    "quality_labels",
)


class SpecError(ValueError):
    """A spec file that cannot be used; the message names file, row and field."""


@dataclass(frozen=True)
class Row:
    label: str
    group: str | None = None
    section: str | None = None
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    paper: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    reference: bool = False
    train: bool = True
    suffix: str = ""  # set by the parser when another row has the same group and label

    @property
    def is_run(self) -> bool:
        """True when this row trains a model (not a reference number, not analysis-only)."""
        return not self.reference and self.train

    @property
    def display(self) -> str:
        """The row's name everywhere (`--row`, claims, status): "group / label [suffix]"."""
        name = f"{self.group} / {self.label}" if self.group else self.label
        return f"{name} {self.suffix}" if self.suffix else name


@dataclass(frozen=True)
class Claim:
    """One conclusion the paper draws from a table, in a form that can be checked.

    ``greater``: ``rows[0]`` > ``rows[1]``; ``order``: rows best first, each above the next;
    ``best``: ``rows[0]`` above every other of ``rows``; ``flat``: every two rows within
    ``within`` of each other. Rows are display names; ``metric`` is one of the table's.
    """

    kind: str
    rows: tuple[str, ...]
    metric: str = "AP"
    within: float | None = None

    @property
    def text(self) -> str:
        m = self.metric
        if self.kind == "greater":
            return f"{self.rows[0]} > {self.rows[1]} ({m})"
        if self.kind == "order":
            return " > ".join(self.rows) + f" ({m})"
        if self.kind == "best":
            return f"{self.rows[0]} is best among {', '.join(self.rows[1:])} ({m})"
        return f"{m} flat within {self.within:g} over {', '.join(self.rows)}"


@dataclass(frozen=True)
class Artifact:
    name: str
    analysis: str
    rows: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    id: str
    kind: str
    paper_ref: str
    title: str
    split: str
    path: Path
    recipe: str | None = None
    metrics: tuple[str, ...] = ()
    info_columns: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    rows: tuple[Row, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    claims: tuple[Claim, ...] = ()

    def row(self, label: str, group: str | None = None) -> Row:
        for r in self.rows:
            if r.label == label and (group is None or r.group == group):
                return r
        raise KeyError(f"{self.id} has no row {label!r}")

    def by_name(self, name: str) -> Row:
        """The row whose display name is ``name``."""
        for r in self.rows:
            if r.display == name:
                return r
        raise KeyError(f"{self.id} has no row {name!r}")

    def resolve(self, row: Row, profile: Profile, engine: str = "native", seed: int = 0) -> RunConfig:
        """Spec row + profile (+ engine, seed) -> the fully explicit run config.

        defaults <- recipe <- row overrides <- profile, where the profile leaves alone what
        the row set explicitly; ``engine`` says which implementation trains it and ``seed``
        which repetition it is (seed 0 keeps the run id of a spec without seeds)."""
        return resolve(self, row, profile, engine, seed)

    def runs(self, profile: Profile, engine: str = "native", seeds: int = 1) -> list[tuple[Row, RunConfig, str]]:
        """(row, config, run_id) for every row that trains and every seed 0 .. seeds - 1, in
        printed order (the seeds of a row together; ``config.seed`` says which)."""
        out = []
        for r in self.rows:
            if r.is_run:
                for seed in range(seeds):
                    cfg = resolve(self, r, profile, engine, seed)
                    out.append((r, cfg, run_id(cfg)))
        return out

    def only_rows(self, names: set[str]) -> "Experiment":
        """This experiment reduced to the rows named (display names), with the claims that
        involve only those rows."""
        rows = tuple(r for r in self.rows if r.display in names)
        claims = tuple(c for c in self.claims if set(c.rows) <= names)
        return dataclasses.replace(self, rows=rows, claims=claims)


def resolve(experiment: Experiment, row: Row, profile: Profile, engine: str = "native", seed: int = 0) -> RunConfig:
    recipe_name = row.recipe or experiment.recipe
    settings: dict[str, Any] = dict(RECIPES[recipe_name]) if recipe_name else {}
    settings["eval_split"] = experiment.split
    settings.update(row.overrides)
    settings = apply_profile(settings, profile, keep=row.overrides)
    settings["engine"] = engine
    settings["seed"] = seed
    where = f"{experiment.path.name}, row {row.display!r}"
    normalised = {}
    for key, value in settings.items():
        try:
            normalised[key] = check_field(key, value)
        except ValueError as err:
            source = "overrides." if key in row.overrides else "resolved setting "
            raise SpecError(f"{where}, field '{source}{key}': {err}") from None
    config = RunConfig(**normalised)
    try:
        check_consistency(config)
    except ValueError as err:
        raise SpecError(f"{where}: {err}") from None
    return config


# ----------------------------------------------------------------------------------- loading


def load_experiment(path: Path) -> Experiment:
    """Read and validate one spec file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); a spec is a UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path.name}: invalid TOML ({' '.join(str(err).split())})") from None
    return _parse(data, path)


def _parse(data: dict[str, Any], path: Path) -> Experiment:
    name = path.name
    _only(data, {"experiment", "row", "artifact", "claim"}, f"{name}")
    head = data.get("experiment")
    if not isinstance(head, dict):
        raise SpecError(f"{name}: missing [experiment] table")
    where = f"{name}, [experiment]"
    _only(
        head,
        {"id", "kind", "paper_ref", "title", "split", "recipe", "metrics", "info_columns", "groups", "uses"},
        where,
    )
    exp_id = _str(head, "id", where)
    if exp_id != path.stem:
        raise SpecError(f"{where}, field 'id': {exp_id!r} must equal the file name {path.stem!r}")
    kind = _choice(head, "kind", KINDS, where)
    split = _choice(head, "split", SPLITS, where)
    recipe = head.get("recipe")
    if recipe is not None and (not isinstance(recipe, str) or recipe not in RECIPES):
        raise SpecError(f"{where}, field 'recipe': unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    metrics = tuple(_str_list(head, "metrics", where))
    for m in metrics:
        if m not in METRICS:
            raise SpecError(f"{where}, field 'metrics': unknown metric {m!r}; choose from {', '.join(METRICS)}")
    info_columns = tuple(_str_list(head, "info_columns", where))
    groups = tuple(_str_list(head, "groups", where))

    raw_rows = data.get("row", [])
    if not isinstance(raw_rows, list):
        raise SpecError(f"{name}, field 'row': must be an array of tables ([[row]])")
    if not raw_rows and not head.get("uses"):
        raise SpecError(f"{name}: needs at least one [[row]] (or `uses` another experiment)")
    rows = _name_duplicates(tuple(_parse_row(r, i, name, metrics, info_columns, groups) for i, r in enumerate(raw_rows)),
                            info_columns)
    seen: set[tuple[Any, ...]] = set()
    for r in rows:
        identity = (r.group, r.label, tuple(sorted(r.info.items())))
        if identity in seen:
            raise SpecError(f"{name}, row {r.display!r}: duplicate row (same group, label and info)")
        seen.add(identity)
        if r.is_run and not (r.recipe or recipe):
            raise SpecError(f"{name}, row {r.display!r}, field 'recipe': a run row needs a recipe")

    label_counts: dict[str, int] = {}
    for r in rows:
        label_counts[r.label] = label_counts.get(r.label, 0) + 1
    artifacts = []
    raw_artifacts = data.get("artifact", [])
    if not isinstance(raw_artifacts, list):
        raise SpecError(f"{name}, field 'artifact': must be an array of tables ([[artifact]])")
    for i, a in enumerate(raw_artifacts):
        awhere = f"{name}, artifact {i + 1}"
        if not isinstance(a, dict):
            raise SpecError(f"{awhere}: must be a table, got {a!r}")
        _only(a, {"name", "analysis", "rows"}, awhere)
        analysis = _choice(a, "analysis", ANALYSES, awhere)
        art_rows = tuple(_str_list(a, "rows", awhere))
        for lab in art_rows:
            if label_counts.get(lab) != 1:
                problem = "no row" if lab not in label_counts else "more than one row"
                raise SpecError(f"{awhere}, field 'rows': {problem} labelled {lab!r}")
        artifacts.append(Artifact(name=_str(a, "name", awhere), analysis=analysis, rows=art_rows))
    if kind == "figure" and not artifacts:
        raise SpecError(f"{name}: a figure spec needs at least one [[artifact]]")
    raw_claims = data.get("claim", [])
    if not isinstance(raw_claims, list):
        raise SpecError(f"{name}, field 'claim': must be an array of tables ([[claim]])")
    claims = tuple(_parse_claim(c, i, name, rows, metrics) for i, c in enumerate(raw_claims))

    return Experiment(
        id=exp_id,
        kind=kind,
        paper_ref=_str(head, "paper_ref", where),
        title=_str(head, "title", where),
        split=split,
        path=path,
        recipe=recipe,
        metrics=metrics,
        info_columns=info_columns,
        groups=groups,
        uses=tuple(_str_list(head, "uses", where)),
        rows=rows,
        artifacts=tuple(artifacts),
        claims=claims,
    )


def _name_duplicates(rows: tuple[Row, ...], info_columns: tuple[str, ...]) -> tuple[Row, ...]:
    """Rows sharing a group and label get, as suffix, the value of the first info column
    that tells them apart (Table 4's "GFL (ours)" rows become "GFL (ours) R-50", ...)."""
    out = list(rows)
    for key in dict.fromkeys((r.group, r.label) for r in rows):
        same = [i for i, r in enumerate(rows) if (r.group, r.label) == key]
        if len(same) < 2:
            continue
        column = next((c for c in info_columns if len({rows[i].info.get(c, "") for i in same}) == len(same)), None)
        for i in same:
            info = rows[i].info
            suffix = info[column] if column else " ".join(v for v in info.values() if v)
            out[i] = dataclasses.replace(rows[i], suffix=suffix)
    return tuple(out)


def _parse_claim(raw: Any, index: int, name: str, rows: tuple[Row, ...], metrics: tuple[str, ...]) -> Claim:
    """One [[claim]]: validated kind, fields and row names (each error names file and claim)."""
    where = f"{name}, claim {index + 1}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be a table")
    kind = _choice(raw, "kind", CLAIM_KINDS, where)
    allowed = {"greater": {"a", "b"}, "order": {"rows"}, "best": {"row", "rows"}, "flat": {"rows", "within"}}[kind]
    _only(raw, allowed | {"kind", "metric"}, where)
    metric = raw.get("metric", "AP")
    if metric not in metrics:
        raise SpecError(f"{where}, field 'metric': {metric!r} is not a metric of this table ({', '.join(metrics)})")
    names = {r.display: r for r in rows}
    if kind == "greater":
        claimed = [_str(raw, "a", where), _str(raw, "b", where)]
    elif kind == "best":
        best = _str(raw, "row", where)
        if "rows" in raw:
            others = [r for r in _str_list(raw, "rows", where) if r != best]
        else:  # every other trained row of its group
            group = names[best].group if best in names else None
            others = [r.display for r in rows if r.is_run and r.group == group and r.display != best]
        claimed = [best, *others]
    else:
        claimed = _str_list(raw, "rows", where)
    for row_name in claimed:
        if row_name not in names:
            raise SpecError(f"{where}: no row {row_name!r} (rows: {', '.join(names)})")
    if len(set(claimed)) != len(claimed) or len(claimed) < 2:
        raise SpecError(f"{where}: needs at least two different rows, got {claimed}")
    if not any(names[r].is_run for r in claimed):
        raise SpecError(f"{where}: compares only reference rows; a claim needs a trained row")
    within = None
    if kind == "flat":
        within = raw.get("within")
        if isinstance(within, bool) or not isinstance(within, (int, float)) or within <= 0:
            raise SpecError(f"{where}, field 'within': must be a positive number, got {within!r}")
        within = float(within)
    return Claim(kind=kind, rows=tuple(claimed), metric=metric, within=within)


def _parse_row(
    raw: Any,
    index: int,
    name: str,
    metrics: tuple[str, ...],
    info_columns: tuple[str, ...],
    groups: tuple[str, ...],
) -> Row:
    if not isinstance(raw, dict):
        raise SpecError(f"{name}, row {index + 1}: must be a table")
    label = raw.get("label")
    where = f"{name}, row {label!r}" if isinstance(label, str) else f"{name}, row {index + 1}"
    _only(
        raw,
        {"label", "group", "section", "recipe", "overrides", "info", "paper", "notes", "reference", "train"},
        where,
    )
    label = _str(raw, "label", where)
    group = raw.get("group")
    if groups:
        if group not in groups:
            raise SpecError(f"{where}, field 'group': must be one of {', '.join(groups)}; got {group!r}")
    elif group is not None:
        raise SpecError(f"{where}, field 'group': the experiment declares no groups")
    section = raw.get("section")
    if section is not None and (not isinstance(section, str) or not section):
        raise SpecError(f"{where}, field 'section': must be text, got {section!r}")
    recipe = raw.get("recipe")
    if recipe is not None and (not isinstance(recipe, str) or recipe not in RECIPES):
        raise SpecError(f"{where}, field 'recipe': unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")

    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict):
        raise SpecError(f"{where}, field 'overrides': must be a table")
    for key, value in overrides.items():
        if key == "engine":
            raise SpecError(f"{where}, field 'overrides.engine': the engine is chosen on the command line "
                            "(gfl-repro run --engine), not by a row")
        if key in ARITHMETIC:
            flag = "--" + key.replace("_", "-")
            raise SpecError(f"{where}, field 'overrides.{key}': {key} is chosen on the command line "
                            f"(gfl-repro {flag}), not by a row")
        if key == "seed":
            raise SpecError(f"{where}, field 'overrides.seed': seeds are chosen on the command line "
                            "(gfl-repro run --seeds), not by a row")
        try:
            check_field(key, value)
        except ValueError as err:
            raise SpecError(f"{where}, field 'overrides.{key}': {err}") from None

    info = raw.get("info", {})
    if not isinstance(info, dict):
        raise SpecError(f"{where}, field 'info': must be a table")
    for key in info:
        if key not in info_columns:
            raise SpecError(f"{where}, field 'info.{key}': not one of the info_columns {list(info_columns)}")
    for key, value in info.items():
        if isinstance(value, (dict, list)):
            raise SpecError(f"{where}, field 'info.{key}': must be text or a number, got {value!r}")
    info = {k: str(v) for k, v in info.items()}

    paper: dict[str, float | None] = {}
    if "paper" in raw:
        values = raw["paper"]
        if not isinstance(values, list) or len(values) != len(metrics):
            raise SpecError(f"{where}, field 'paper': needs {len(metrics)} numbers in the order {list(metrics)}")
        for metric, value in zip(metrics, values):
            if value == "n/a":
                paper[metric] = None
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                paper[metric] = float(value)
            else:
                raise SpecError(f"{where}, field 'paper.{metric}': must be a number or \"n/a\", got {value!r}")

    notes = raw.get("notes", {})
    if not isinstance(notes, dict) or any(k not in metrics for k in notes):
        raise SpecError(f"{where}, field 'notes': keys must be metrics of this table")

    reference = raw.get("reference", False)
    train = raw.get("train", True)
    for fname, value in (("reference", reference), ("train", train)):
        if not isinstance(value, bool):
            raise SpecError(f"{where}, field {fname!r}: must be true or false")
    if reference and overrides:
        raise SpecError(f"{where}, field 'overrides': a reference row is never run")

    return Row(
        label=label,
        group=group,
        section=section,
        recipe=recipe,
        overrides=dict(overrides),
        info=info,
        paper=paper,
        notes={k: str(v) for k, v in notes.items()},
        reference=reference,
        train=train,
    )


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(f"{where}, field {key!r}: unknown field; allowed: {', '.join(sorted(allowed))}")


def _str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}, field {key!r}: required text")
    return value


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = table.get(key)
    if value not in choices:
        raise SpecError(f"{where}, field {key!r}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def _str_list(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}, field {key!r}: must be a list of text")
    return value
