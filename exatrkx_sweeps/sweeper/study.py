"""Study files (``studies/<name>.yaml``): what to search, what to optimise, how.

.. code-block:: yaml

    description: GNN depth at fixed everything else
    kind: scan                   # scan: every point once, read as curves (no best trial);
                                 # search: optimise (best trial / Pareto front). Default:
                                 # search for a study file, scan for a command-line grid
    params:                      # the search space, in Hydra override syntax
      gnn.iterations: 2,4,6,8    # comma lists / choice() / range() / interval() / tag(log, ...)
    objectives:                  # run-report metric names, in order, with directions
      eff_tech_pt0.5: maximize
    sampler: auto                # auto (grid if every param is listed, else tpe), grid, tpe,
                                 # random, nsga2, gp, qmc; or {name: tpe, seed: 0, ...kwargs}
    pruner: none                 # none, median, percentile, hyperband, successive_halving,
                                 # wilcoxon, threshold; or {name: median, n_startup_trials: 2, ...}
    n_trials: null               # the total (a rerun continues up to it); null: the grid size
    max_failures: null           # stop after this many failed trials (null: never)
    max_retry: 2                 # re-runs of a trial whose worker died
    storage: null                # see exatrkx_sweeps.sweeper.storage
    overrides: [gnn.epochs=30]   # fixed overrides of every trial

A pruner may take ``intermediate``: what the running job reports, in order (steps
follow this list): ``STAGE/METRIC`` once after a stage (``graph/val_edge_eff``),
``STAGE/METRIC@epoch`` every training epoch of a stage (``gnn/val_edge_eff@epoch``),
``test/eff_tech_pt0.5@event`` every test event (for the Wilcoxon pruner, whose
instances are events).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..errors import one_line
from .space import Param, SpaceError, is_grid, parse

PACKAGED = Path(__file__).resolve().parents[1] / "studies"
DIRECTIONS = ("maximize", "minimize")
KINDS = ("scan", "search")
_KEYS = {
    "description",
    "kind",
    "params",
    "objectives",
    "sampler",
    "pruner",
    "n_trials",
    "max_failures",
    "max_retry",
    "storage",
    "study_name",
    "overrides",
}
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")
DEFAULT_INTERMEDIATE = {
    "wilcoxon": ["test/eff_tech_pt0.5@event"],
    "other": ["graph/val_edge_eff", "filter/val_edge_eff", "gnn/val_edge_eff@epoch"],
}
_INTERMEDIATE = re.compile(r"^(embedding|graph|filter|gnn|test)/[\w.]+(@epoch|@event)?$")


class StudyError(ValueError):
    """A study file or a sweeper setting is wrong; the message names it and the fix."""


@dataclass
class StudySpec:
    name: str
    params: list[Param]
    fixed: list[str]
    objectives: list[tuple[str, str]] = field(default_factory=lambda: [("eff_tech_pt0.5", "maximize")])
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "auto"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    n_trials: int | None = None
    max_failures: int | None = None
    max_retry: int = 2
    storage: str | None = None
    description: str = ""
    path: Path | None = None
    kind: str = "search"
    title: str = ""  # the MLflow parent run's name: the study file's, or the command-line grid

    @property
    def scan(self) -> bool:
        return self.kind == "scan"

    @property
    def grid(self) -> bool:
        name = self.sampler["name"]
        return name == "grid" or (name == "auto" and is_grid(self.params))

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [m for m, _ in self.objectives]


def available(extra_dirs: list[Path] | None = None) -> list[str]:
    names = set()
    for d in [*(extra_dirs or []), PACKAGED]:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find(name: str, cwd: Path | None = None) -> Path:
    """A study file: a path, ``./studies/NAME.yaml``, or one shipped with the package."""
    cwd = cwd or Path.cwd()
    p = Path(name).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in name:
        p = p if p.is_absolute() else cwd / p
        if p.is_file():
            return p
        raise StudyError(f"study={name}: no such file ({p}).")
    for d in (cwd / "studies", PACKAGED):
        f = d / f"{name}.yaml"
        if f.is_file():
            return f
    raise StudyError(
        f"study={name}: no study file of that name. Available: {', '.join(available([cwd / 'studies']))} "
        "(or give a path to a YAML file)."
    )


def _objectives(raw, where: str) -> list[tuple[str, str]]:
    if isinstance(raw, str):
        raw = {raw: "maximize"}
    if isinstance(raw, list):  # [{metric: direction}, ...] or [metric, ...]
        items: list[tuple[str, str]] = []
        for x in raw:
            if isinstance(x, Mapping):
                items += list(x.items())
            else:
                items.append((str(x), "maximize"))
        raw = dict(items)
    if not isinstance(raw, Mapping) or not raw:
        raise StudyError(f"{where}objectives: give metric names with directions, e.g. {{purity: maximize}}.")
    out = []
    for metric, direction in raw.items():
        if direction not in DIRECTIONS:
            raise StudyError(f"{where}objectives.{metric}={direction}: must be maximize or minimize.")
        out.append((str(metric), str(direction)))
    return out


def _named(raw, what: str, where: str) -> dict[str, Any]:
    if raw is None:
        return {"name": "none" if what == "pruner" else "auto"}
    if isinstance(raw, str):
        return {"name": raw}
    if isinstance(raw, Mapping) and "name" in raw:
        return dict(raw)
    raise StudyError(f"{where}{what}: give a name ({what}: tpe) or a mapping with a name key.")


def build(
    raw: Mapping[str, Any],
    name: str,
    cli_overrides: list[str] | None = None,
    path: Path | None = None,
) -> StudySpec:
    """A validated study from a study file's mapping plus command-line overrides (command-line
    sweeps extend or replace the file's search space; plain command-line values are fixed)."""
    where = f"{path}: " if path else ""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise StudyError(
            f"{where}unknown key(s) {', '.join(unknown)}; a study file has {', '.join(sorted(_KEYS))}."
        )
    name = str(raw.get("study_name") or name)
    if not _NAME.match(name):
        raise StudyError(f"study name {name!r}: use letters, digits and _ . : / - only.")
    try:
        file_params, file_fixed = parse(raw.get("params") or {})
        fixed_list = list(raw.get("overrides") or [])
        extra_params, fixed_overrides = parse([*fixed_list, *(cli_overrides or [])])
    except SpaceError as exc:
        raise StudyError(f"{where}{exc}") from None
    keys = {p.key for p in extra_params}
    fixed_keys = {f.split("=", 1)[0] for f in fixed_overrides}
    params = [p for p in file_params if p.key not in keys and p.key not in fixed_keys] + extra_params
    fixed = [f for f in file_fixed if f.split("=", 1)[0] not in keys | fixed_keys] + fixed_overrides
    spec = StudySpec(
        name=name,
        params=params,
        fixed=fixed,
        objectives=_objectives(raw.get("objectives", "eff_tech_pt0.5"), where),
        sampler=_named(raw.get("sampler"), "sampler", where),
        pruner=_named(raw.get("pruner"), "pruner", where),
        n_trials=raw.get("n_trials"),
        max_failures=raw.get("max_failures"),
        max_retry=int(raw.get("max_retry", 2)),
        storage=raw.get("storage"),
        description=str(raw.get("description") or ""),
        path=path,
    )
    # a command-line grid (-m a=1,2,3) reads as curves; a study file says what it is
    spec.kind = str(raw.get("kind") or ("scan" if path is None and spec.grid else "search"))
    swept = {o.split("=", 1)[0]: o for o in cli_overrides or [] if o.split("=", 1)[0] in keys}.values()
    spec.title = (
        name if path or raw.get("study_name") else f"{'grid' if spec.grid else 'search'} {' '.join(swept)}"
    )
    check(spec, where)
    return spec


def check(spec: StudySpec, where: str = "") -> None:
    if spec.kind not in KINDS:
        raise StudyError(f"{where}kind={spec.kind}: one of {', '.join(KINDS)}.")
    if spec.scan and not spec.grid:
        raise StudyError(
            f"{where}kind: scan runs every point once and needs a grid (lists or ranges); "
            f"{', '.join(p.key for p in spec.params if not p.enumerable)} is an interval. Use kind: search."
        )
    pname = spec.pruner["name"]
    if pname not in PRUNERS:
        raise StudyError(f"{where}pruner={pname}: one of {', '.join(PRUNERS)}.")
    if spec.sampler["name"] not in SAMPLERS:
        raise StudyError(f"{where}sampler={spec.sampler['name']}: one of {', '.join(SAMPLERS)}.")
    for key, lo in (("n_trials", 1), ("max_failures", 0)):
        v = getattr(spec, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
            raise StudyError(f"{where}{key}={v}: must be null or an integer >= {lo}.")
    if spec.max_retry < 0:
        raise StudyError(f"{where}max_retry={spec.max_retry}: must be >= 0.")
    if spec.sampler["name"] == "grid" and not is_grid(spec.params):
        raise StudyError(
            f"{where}sampler=grid needs every parameter as a list or range; "
            f"{', '.join(p.key for p in spec.params if not p.enumerable)} is an interval."
        )
    if not spec.grid and spec.n_trials is None:
        raise StudyError(f"{where}n_trials: a search that is not a grid needs a total number of trials.")
    if pname != "none":
        if len(spec.objectives) > 1:
            raise StudyError(
                f"{where}pruner={pname}: Optuna prunes single-objective studies only; "
                "use pruner: none with several objectives."
            )
        inter = spec.pruner.setdefault(
            "intermediate", DEFAULT_INTERMEDIATE["wilcoxon" if pname == "wilcoxon" else "other"]
        )
        bad = [x for x in inter if not _INTERMEDIATE.match(str(x))]
        if bad:
            raise StudyError(
                f"{where}pruner.intermediate: {', '.join(map(str, bad))} is not STAGE/METRIC[@epoch|@event] "
                "(e.g. graph/val_edge_eff, gnn/val_edge_eff@epoch, test/eff_tech_pt0.5@event)."
            )
    # build both once, so that a wrong keyword argument stops the sweep before any trial
    make_sampler(spec.sampler, spec.grid, seed=0)
    make_pruner(spec.pruner)


SAMPLERS = ("auto", "grid", "tpe", "random", "nsga2", "gp", "qmc")
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving", "wilcoxon", "threshold")


def _construct(cls, kwargs: dict, what: str):
    try:
        return cls(**kwargs)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise StudyError(f"{what}: {exc}; {cls.__name__} accepts {', '.join(accepted)}.") from None
    except ValueError as exc:
        raise StudyError(f"{what}: {exc}") from None


def make_sampler(sampler: Mapping[str, Any], grid: bool, seed: int | None):
    """The Optuna sampler. Grid points are queued as fixed trials by the sweeper (so that
    parallel workers never run one twice); the sampler then only fills what is not fixed.
    A ``seed`` in the study file is the base of the per-trial seed."""
    kwargs = {k: v for k, v in sampler.items() if k != "name"}
    kwargs["seed"] = seed
    name = sampler["name"]
    if name in ("auto", "grid"):
        name = "random" if grid else "tpe"
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "gp": optuna.samplers.GPSampler,
        "qmc": optuna.samplers.QMCSampler,
    }
    return _construct(classes[name], kwargs, f"sampler={name}")


def make_pruner(pruner: Mapping[str, Any]):
    kwargs = {k: v for k, v in pruner.items() if k not in ("name", "intermediate")}
    classes = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "wilcoxon": optuna.pruners.WilcoxonPruner,
        "threshold": optuna.pruners.ThresholdPruner,
    }
    return _construct(classes[pruner["name"]], kwargs, f"pruner={pruner['name']}")


def load(
    study: str | None,
    cli_overrides: list[str],
    default_name: str,
    cwd: Path | None = None,
    settings: Mapping[str, Any] | None = None,
) -> StudySpec:
    """The study of a sweep: a study file (``study=NAME``) or, without one, a grid of the
    command-line sweeps. ``settings`` (from ``hydra.sweeper.*``) override the file's keys."""
    if not study:
        return build(dict(settings or {}), default_name, cli_overrides)
    path = find(study, cwd)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML ({one_line(exc)}).") from None
    if not isinstance(raw, Mapping):
        raise StudyError(f"{path}: a study file is a mapping (params, objectives, sampler, ...).")
    return build({**raw, **(settings or {})}, path.stem, cli_overrides, path)
