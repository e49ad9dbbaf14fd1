"""A study file: the settings to compare, as a matrix, and how often to measure each cell.

    name: quick
    repetitions: 3          # measured runs per cell (at least 3), after `warmup` runs
    samples: 32             # input rows per run
    matrix:
      models: [lenet5, {architecture: digits_cnn, weights: ../../models/digits_cnn.safetensors,
                        data: ../../data/digits-test.safetensors}]
      parties: [2, 3]
      randomness: [dealer, local]
      comparisons: [circuits]   # or fss (randomness dealer and 2 parties only)
      batch_size: [1, 16]

Every axis is a list; the cells are their product, in the order the axes are listed
below (models outermost). Validated once, with the same one-line-per-problem
messages as run configs; relative paths resolve against the study file's folder.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smpc.model import zoo
from smpc.config import FunctionsConfig, TimeoutConfig, read_yaml, resolver, validate_document
from smpc.errors import ConfigError

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Section):
    """One model of the study: a zoo name (or module:factory) with optional real files."""

    architecture: str
    label: str | None = None  # how tables name it; default: the architecture
    input_shape: tuple[int, ...] | None = None  # default: the zoo's shape
    weights: Path | None = None  # the owner's weights; default: random (study seed)
    data: Path | None = None  # inputs (and labels); default: random normal inputs
    samples: int | None = Field(default=None, ge=1)  # default: the study's samples

    @field_validator("label")
    @classmethod
    def _label_ok(cls, v: str | None) -> str | None:
        if v is not None and not _LABEL.match(v):
            raise ValueError(f"expected letters, digits, '.', '-', '_' (at most 48), got {v!r}")
        return v

    @model_validator(mode="after")
    def _shape_known(self) -> ModelEntry:
        if self.input_shape is None and self.architecture not in zoo.INPUT_SHAPES:
            raise ValueError(f"input_shape: required for {self.architecture!r}, which is not a zoo model")
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise ValueError(f"input_shape: expected positive dimensions, got {list(self.input_shape)}")
        return self

    @property
    def name(self) -> str:
        return self.label or self.architecture

    @property
    def shape(self) -> tuple[int, ...]:
        return self.input_shape or zoo.INPUT_SHAPES[self.architecture]


def _distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    seen = [v.model_dump() if isinstance(v, BaseModel) else v for v in values]
    twice = [v for i, v in enumerate(seen) if v in seen[:i]]
    if twice:
        raise ValueError(f"{twice[0]!r} is listed twice")
    return values


def _within(values: tuple[int, ...], lo: int, hi: int | None, what: str) -> tuple[int, ...]:
    for n in values:
        if n < lo or (hi is not None and n > hi):
            raise ValueError(f"expected {what} {lo}..{hi}, got {n}" if hi else f"expected {what} >= {lo}, got {n}")
    return _distinct(values)


class Matrix(_Section):
    """The axes of the study; every combination is one cell."""

    models: tuple[ModelEntry, ...] = Field(min_length=1)
    parties: tuple[int, ...] = Field(default=(2,), min_length=1)
    # two-party: 2 parties and no dealer (its offline phase is measured apart: offline_s)
    randomness: tuple[Literal["dealer", "local", "two-party"], ...] = Field(default=("dealer",), min_length=1)
    # protocol.comparisons; fss needs the dealer and exactly 2 parties in every cell, ot
    # randomness two-party in every cell (and is the default when that is all it lists)
    comparisons: tuple[Literal["circuits", "fss", "ot"], ...] = Field(default=("circuits",), min_length=1)
    transport: tuple[Literal["gloo", "tls"], ...] = Field(default=("gloo",), min_length=1)
    precision_bits: tuple[int, ...] = Field(default=(16,), min_length=1)
    batch_size: tuple[int, ...] = Field(default=(1,), min_length=1)
    # CrypTen approximation settings; each entry is one variant ({} = CrypTen's defaults)
    functions: tuple[FunctionsConfig, ...] = Field(default=(FunctionsConfig(),), min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _two_party_compares_by_ot(cls, data: Any) -> Any:
        # as a run config does: randomness two-party alone, comparisons unset -> ot
        if isinstance(data, dict) and "comparisons" not in data and list(data.get("randomness") or []) == ["two-party"]:
            data = {**data, "comparisons": ["ot"]}
        return data

    @field_validator("models", mode="before")
    @classmethod
    def _names_as_entries(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"architecture": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("models")
    @classmethod
    def _models_distinct(cls, v: tuple[ModelEntry, ...]) -> tuple[ModelEntry, ...]:
        names = [m.name for m in v]
        twice = [n for i, n in enumerate(names) if n in names[:i]]
        if twice:
            raise ValueError(f"model {twice[0]!r} is listed twice (give one a different label)")
        return v

    @field_validator("parties")
    @classmethod
    def _parties_range(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _within(v, 2, 8, "party counts")

    @field_validator("precision_bits")
    @classmethod
    def _bits_range(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _within(v, 8, 24, "precision bits")

    @field_validator("batch_size")
    @classmethod
    def _batch_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _within(v, 1, None, "batch sizes")

    @field_validator("randomness", "comparisons", "transport", "functions")
    @classmethod
    def _axis_distinct(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        return _distinct(v)

    @model_validator(mode="after")
    def _fss_cells_runnable(self) -> Matrix:
        if "fss" in self.comparisons and (set(self.randomness) != {"dealer"} or set(self.parties) != {2}):
            raise ValueError(
                "comparisons: fss runs with randomness dealer and 2 parties only: make randomness [dealer] and "
                "parties [2], or study fss in a study of its own"
            )
        if "ot" in self.comparisons and set(self.randomness) != {"two-party"}:
            raise ValueError(
                "comparisons: ot runs with randomness two-party only: make randomness [two-party], or study ot in a "
                "study of its own"
            )
        if "two-party" in self.randomness and set(self.parties) != {2}:
            raise ValueError("randomness: two-party runs with 2 parties only: make parties [2]")
        return self


class Study(_Section):
    """A whole study: the matrix, how each cell is measured, where files come from."""

    version: Literal[1] = 1
    name: str
    description: str = ""
    repetitions: int = Field(default=3, ge=3, le=100)  # measured runs per cell
    warmup: int = Field(default=1, ge=0, le=10)  # runs per cell whose numbers are dropped
    samples: int = Field(default=32, ge=1)  # input rows per run (the first rows of a data file)
    seed: int = 0  # random weights and inputs
    matrix: Matrix
    timeouts: TimeoutConfig = TimeoutConfig(run_s=900.0)  # for every run of every cell
    source: Path = Field(default=Path("<memory>"), exclude=True)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _LABEL.match(v):
            raise ValueError(f"expected letters, digits, '.', '-', '_' (at most 48), got {v!r}")
        return v

    def cells(self) -> list[Cell]:
        """Every combination of the matrix, models outermost."""
        m = self.matrix
        return [
            Cell(i, *combo)
            for i, combo in enumerate(
                itertools.product(
                    m.models,
                    m.parties,
                    m.randomness,
                    m.comparisons,
                    m.transport,
                    m.precision_bits,
                    m.batch_size,
                    m.functions,
                )
            )
        ]


@dataclass(frozen=True)
class Cell:
    """One combination of settings."""

    index: int
    model: ModelEntry
    parties: int
    randomness: str
    comparisons: str
    transport: str
    precision_bits: int
    batch_size: int
    functions: FunctionsConfig

    @property
    def functions_label(self) -> str:
        """The approximation settings that differ from CrypTen's defaults, or 'default'."""
        changed = self.functions.model_dump(exclude_defaults=True)
        return ",".join(f"{k}={v}" for k, v in sorted(changed.items())) or "default"

    def settings(self) -> dict[str, Any]:
        """Every setting of the cell, as recorded with its results."""
        return {
            "model": self.model.name,
            "architecture": self.model.architecture,
            "input_shape": list(self.model.shape),
            "trained_weights": self.model.weights is not None,
            "real_data": self.model.data is not None,
            "parties": self.parties,
            "randomness": self.randomness,
            "comparisons": self.comparisons,
            "transport": self.transport,
            "precision_bits": self.precision_bits,
            "batch_size": self.batch_size,
            "functions": self.functions_label,
            "functions_settings": self.functions.model_dump(),
        }


def parse_study(data: Any, source: str | Path = "<memory>") -> Study:
    """Validate a parsed study document; raises ConfigError naming file and key per problem."""
    study = validate_document(Study, data, source)
    resolve = resolver(source)
    models = tuple(
        m.model_copy(update={"weights": resolve(m.weights), "data": resolve(m.data)}) for m in study.matrix.models
    )
    for i, m in enumerate(models):
        for key in ("weights", "data"):
            path = getattr(m, key)
            if path is not None and not path.is_file():
                raise ConfigError(f"{source}: matrix.models[{i}].{key}: file not found: {path}")
    return study.model_copy(
        update={"matrix": study.matrix.model_copy(update={"models": models}), "source": Path(source)}
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML file."""
    return parse_study(read_yaml(path, "study"), Path(path))
