"""The study config: a validated YAML schema, shipped presets and CLI overrides.

Everything is checked before anything starts: unknown keys, wrong types, impossible cells
(through the variant registry) and empty ranges each fail with one line naming the field. A field
that is a training option takes its default from ``TrainConfig`` (``TRAIN_DEFAULTS``); presets set
their own values on top.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from trainables.datasets import dataset_spec
from trainables.registry import ALL_DATASETS, CORE_VARIANTS, ST_TRANSFORMS, VariantError, check_variant
from trainables.train_config import OPTIMIZERS, OPTION_TYPES, OPTIONS, RUN, TRAIN_DEFAULTS, option_problem, options_of

PRESETS = ("smoke", "quick", "cpu-demo", "paper-cpu", "paper", "paper-search", "icpr")
TRAIN = TRAIN_DEFAULTS
RUN_OPTIONS = options_of(RUN)  # the training options one study sets for all its trials
FINAL_SEED_LIMIT = 2**20  # final seeds lie below it; search trials' seeds at or above it (study.search.samplers)


@dataclass(frozen=True)
class Cell:
    """One row × column of the result tables: a dataset, a variant and the ST's parameterisation."""

    dataset: str
    variant: str
    st_transform: str = "affine"

    @property
    def key(self) -> str:
        base = f"{self.dataset}/{self.variant}"
        return base if self.st_transform == "affine" or self.variant == "CNN" else f"{base}/{self.st_transform}"


class ConfigError(ValueError):
    """Invalid study configuration; ``lines`` holds one message per offending field."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


def _known(value: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    """The list without duplicates, or a one-line error naming the first unknown entry and the allowed ones."""
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}: allowed {', '.join(allowed)}")
    return list(dict.fromkeys(value))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Range(Strict):
    """A numeric range [low, high]; ``log`` samples log-uniformly. low == high fixes the value."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"range bounds must be finite numbers, got [{self.low}, {self.high}]")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class SearchSpace(Strict):
    """The Optuna ranges; each cell gets its own seeded Optuna study (``sampler``) over this space."""

    optimizer: list[Literal[OPTIMIZERS]] = Field(default_factory=lambda: list(OPTIMIZERS), min_length=1)
    lr: Range = Range(low=1e-4, high=0.1, log=True)
    loc_lr_mult: Range = Range(low=0.01, high=1.0, log=True)
    momentum: Range = Range(low=0.0, high=0.95)
    weight_decay: Range = Range(low=TRAIN["weight_decay"], high=TRAIN["weight_decay"])
    batch_size: list[int] = Field(default_factory=lambda: [TRAIN["batch_size"]], min_length=1)

    def loose_fields(self) -> list[str]:
        """The fields that leave a choice (a range or several options): empty for a fixed recipe."""
        ranges = [n for n in ("lr", "loc_lr_mult", "momentum", "weight_decay") if getattr(self, n).low != getattr(self, n).high]
        return [n for n in ("optimizer", "batch_size") if len(getattr(self, n)) > 1] + ranges

    @field_validator("lr", "loc_lr_mult")
    @classmethod
    def _positive(cls, value: Range):
        if value.low <= 0:
            raise ValueError(f"must be > 0, got low = {value.low}")
        return value

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, value: Range):
        if value.low < 0 or value.high >= 1:
            raise ValueError(f"momentum must lie in [0, 1), got [{value.low}, {value.high}]")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batches(cls, value: list[int]):
        if any(b < 1 for b in value):
            raise ValueError(f"batch sizes must be >= 1, got {value}")
        return value


class Resources(Strict):
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)


class _StudyFields(Strict):
    """The study's own fields; ``StudyConfig`` adds the training options."""

    name: str = Field("stn-study", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    datasets: list[str] = Field(default_factory=lambda: [TRAIN["dataset"]], min_length=1)
    variants: list[str] = Field(default_factory=lambda: list(CORE_VARIANTS), min_length=1)
    st_transforms: list[str] = Field(default_factory=lambda: [TRAIN["st_transform"]], min_length=1)
    extra_cells: list[str] = Field(default_factory=list)  # "<dataset>/<variant>" rows beyond the cross product
    search: SearchSpace = Field(default_factory=SearchSpace)
    overrides: dict[str, SearchSpace] = Field(default_factory=dict)  # by variant or "<dataset>/<variant>"
    trials_per_cell: int = Field(4, ge=0)  # 0: no search, the fixed recipe of ``search`` goes straight to the finals
    final_epochs: int | None = Field(None, ge=1)  # default: epochs
    sampler: Literal["tpe", "gp", "random"] = "tpe"  # per cell; a resume/extension keeps each cell's saved study (and its sampler)
    # random trials before TPE/GP model the cell: Optuna's 10 would make a 2-16-trial search pure random
    n_startup_trials: int = Field(4, ge=0)
    pruner: Literal["asha", "median", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    final_seeds: list[int] = Field(default_factory=lambda: [0])
    overlap_final: bool = True  # a cell's final runs start in the search run's idle slots once its search is over
    seed: int = 0
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int = Field(2, ge=1)
    min_free_gb: float = Field(1.0, ge=0)  # stop cleanly before the storage or local store fills up
    tracking_wait_s: float = Field(600.0, ge=0)  # at the end, how long to wait for a tracking server that is down
    tracking_uri: str | None = None
    storage_path: str | None = None
    # each cell's Optuna study: a database URL (e.g. postgresql://...), default the study's journal file
    optuna_storage: str | None = None

    # Every other training option (``TrainConfig``'s "run" role) is a field of the study too, added below from
    # the dataclass: its default, its type, and ``option_problem`` as its one check.
    @field_validator(*RUN_OPTIONS, check_fields=False)
    @classmethod
    def _training_option(cls, value, info: ValidationInfo):
        problem = option_problem(info.field_name, value)
        if problem:
            raise ValueError(problem)
        return tuple(sorted(value)) if info.field_name == "lr_milestones" else value

    @field_validator("final_seeds")
    @classmethod
    def _final_seeds(cls, value: list[int]):
        bad = [s for s in value if not 0 <= s < FINAL_SEED_LIMIT]
        if bad:
            raise ValueError(f"final seeds must lie in [0, {FINAL_SEED_LIMIT}) (search trials use seeds from "
                             f"{FINAL_SEED_LIMIT} up), got {bad[0]}")
        repeated = [s for i, s in enumerate(value) if s in value[:i]]
        if repeated:  # a repeated seed would be one final run counted twice in the statistics
            raise ValueError(f"seeds must be distinct, got {repeated[0]} more than once")
        return value

    @field_validator("optuna_storage")
    @classmethod
    def _optuna_storage(cls, value: str | None):
        if value and not re.match(r"^(postgresql|mysql|sqlite)(\+\w+)?://", value):
            raise ValueError(f"must be a database URL (postgresql://, mysql:// or sqlite:///...; default: the "
                             f"study's journal file), got {value!r}")
        if value and urlsplit(value).password:  # the config is logged to MLflow and kept in study.json
            raise ValueError("must not hold a password (the config is logged with the study): leave it out of "
                             "the URL and set PGPASSWORD (or ~/.pgpass) for Postgres")
        return value or None

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: list[str]):
        return _known(value, ALL_DATASETS, "dataset")

    @field_validator("data_root", check_fields=False)
    @classmethod
    def _data_root(cls, value: str | None):
        # resolved on the driver: every worker reads the driver's (shared) path, not its own home
        return str(Path(value).expanduser()) if value else None

    @field_validator("st_transforms")
    @classmethod
    def _transforms(cls, value: list[str]):
        return _known(value, tuple(ST_TRANSFORMS), "st_transform")

    @model_validator(mode="after")
    def _warmup_fits(self):
        shortest = min(self.epochs, self.final_epochs or self.epochs)
        if self.warmup_epochs > shortest:
            raise ValueError(f"warmup_epochs: must be <= the shortest trial ({shortest} epochs), got {self.warmup_epochs:g}")
        return self

    @model_validator(mode="after")
    def _cells_exist(self):
        for dataset in self.datasets:
            for variant in self.variants:
                try:
                    check_variant(dataset, variant, "affine")
                except VariantError as err:
                    raise ValueError(f"variants: {err}") from None
        for cell in self.extra_cells:
            dataset, _, variant = cell.partition("/")
            if dataset not in ALL_DATASETS or not variant:
                raise ValueError(f"extra_cells: {cell!r} must be <dataset>/<variant> with dataset one of "
                                 f"{', '.join(ALL_DATASETS)}")
            try:
                check_variant(dataset, variant, "affine")
            except VariantError as err:
                raise ValueError(f"extra_cells: {err}") from None
        keys = {v for v in self.variants} | {c.partition("/")[2] for c in self.extra_cells}
        keys |= {f"{d}/{v}" for d in self.datasets for v in self.variants} | set(self.extra_cells)
        stray = [k for k in self.overrides if k not in keys]
        if stray:
            raise ValueError(f"overrides: {stray[0]!r} names no cell of this study: allowed {', '.join(sorted(keys))}")
        return self

    @model_validator(mode="after")
    def _data_has_a_root(self):
        wanted = self.datasets + [c.partition("/")[0] for c in self.extra_cells]
        rooted = [dataset_spec(d) for d in wanted if d in ALL_DATASETS and not dataset_spec(d).embedded]
        if rooted and self.data_root is None:  # no embedded subset: fail before anything starts
            spec = rooted[0]
            embedded = ", ".join(d for d in ALL_DATASETS if dataset_spec(d).embedded)
            by_hand = "" if spec.downloadable else f"; {spec.name} is read only (it cannot be downloaded): put its " \
                                                   f"files there by hand"
            raise ValueError(f"data_root: {spec.name} has no embedded subset: allowed a folder holding "
                             f"{spec.data_folder}/ (only {embedded} run without one){by_hand}")
        return self

    @model_validator(mode="after")
    def _recipe_is_fixed_without_a_search(self):
        if self.trials_per_cell:
            return self
        if not self.final_seeds:
            raise ValueError("final_seeds: trials_per_cell 0 runs only final runs: give at least one seed")
        for where, space in [("search", self.search), *((f"overrides.{k}", v) for k, v in self.overrides.items())]:
            loose = space.loose_fields()
            if loose:
                raise ValueError(f"{where}.{loose[0]}: trials_per_cell 0 trains one fixed recipe: give a single "
                                 f"value (low == high, or a one-item list)")
        return self

    def cells(self) -> list[Cell]:
        """Every dataset × variant × st_transform of the study, then the extra cells (affine)."""
        cells = [Cell(d, v, t) for d in self.datasets for v in self.variants for t in self.st_transforms
                 if not (v == "CNN" and t != self.st_transforms[0])]  # the CNN has no ST to parameterise
        cells += [Cell(*c.split("/", 1), "affine") for c in self.extra_cells]
        return list(dict.fromkeys(cells))

    def space_for(self, dataset: str, variant: str) -> SearchSpace:
        return self.overrides.get(f"{dataset}/{variant}") or self.overrides.get(variant) or self.search

    def hash(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)



StudyConfig = create_model(
    "StudyConfig", __base__=_StudyFields, __module__=__name__,
    **{name: (OPTION_TYPES[name], OPTIONS[name].default) for name in RUN_OPTIONS})
StudyConfig.__doc__ = """A study: its cells, search, stages and resources, and one value of every training option for all trials."""

def _format(err: ValidationError) -> list[str]:
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        if item["type"] == "literal_error":
            message = message.replace("Input should be", "allowed:")
        got = item.get("input")
        shown = "" if item["type"] in ("extra_forbidden", "value_error") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{field}: {message}{shown}" if item["loc"] else f"{message}{shown}")
    return lines


def validate(data: dict) -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def preset_data(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError([f"preset: unknown preset {name!r}: allowed {', '.join(PRESETS)}"])
    text = resources.files("study").joinpath("presets", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config: file not found: {path}"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"config: {path} is not valid YAML{where}: {getattr(err, 'problem', err)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config: {path} must hold a mapping of fields, got {type(data).__name__}"])
    return data


def set_path(data: dict, dotted: str, value) -> None:
    """Apply one ``a.b.c=value`` override (the value parsed as YAML: numbers, lists, booleans)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError([f"{dotted}: {key} is not a mapping"])
    node[keys[-1]] = value


def load(preset: str | None = None, path: str | Path | None = None, overrides: dict | None = None) -> StudyConfig:
    """Preset (default ``smoke`` when no file is given), then the YAML file on top, then overrides."""
    data: dict = preset_data(preset or "smoke") if (preset or not path) else {}
    if path:
        data = _deep_merge(data, read_yaml(path))
    for dotted, value in (overrides or {}).items():
        set_path(data, dotted, value)
    return validate(data)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
