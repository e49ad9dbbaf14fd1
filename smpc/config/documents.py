"""A parsed YAML document validated against a pydantic schema, every problem at once, one
line each naming the file and the key path (``configs/x.yaml: parties[1].port: expected
an integer 1..65535, got 'abc'``; an unknown key is told the closest known one), and
relative paths resolved against the file's folder. Configs and studies share it."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args, overload

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from smpc.errors import ConfigError

_Model = TypeVar("_Model", bound=BaseModel)  # the schema validate_document reads


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a file path",
    "too_short": "a non-empty list",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _schemas_in(annotation: Any) -> list[type[BaseModel]]:
    # the sections a field can hold, through Optional, tuple[...] and unions
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in get_args(annotation) for s in _schemas_in(arg)]


def _known_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` (the path of a key inside `schema`) accepts; none
    when the path does not lead to one section."""
    for part in loc:
        if isinstance(part, int):  # an item of a list: the same section
            continue
        field = schema.model_fields.get(part) if isinstance(part, str) else None
        candidates = _schemas_in(field.annotation) if field is not None else []
        if len(candidates) != 1:
            return []
        schema = candidates[0]
    return [field.alias or name for name, field in schema.model_fields.items() if not field.exclude]


def _unknown_key(schema: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """`unknown key`, with the closest key the section knows when one is close."""
    if schema is None or not loc or not isinstance(loc[-1], str):
        return "unknown key"
    close = difflib.get_close_matches(loc[-1], _known_keys(schema, loc[:-1]), n=1)
    return f"unknown key; did you mean {close[0]}?" if close else "unknown key"


def _message(err: ErrorDetails, schema: type[BaseModel] | None = None) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return _unknown_key(schema, err["loc"])
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {value!r}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"expected a value {_BOUNDS[kind]} {bound}, got {value!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}"


def _validation_error(exc: ValidationError, source: str | Path, schema: type[BaseModel] | None = None) -> ConfigError:
    """One line per problem, each naming `source` and the key path (shared by every
    YAML schema of the project); an unknown key is told the closest key of `schema`."""
    lines: list[str] = []
    for err in exc.errors():
        where = _loc(err["loc"])
        if err["type"] == "value_error" and not where:
            lines.extend(f"{source}: {line}" for line in str(err["ctx"]["error"]).splitlines())
        else:
            lines.append(f"{source}: {where}: {_message(err, schema)}")
    return ConfigError("\n".join(lines))


def validate_document(schema: type[_Model], data: Any, source: str | Path) -> _Model:
    """`data` (a parsed YAML document) as an instance of `schema`, or a ConfigError with
    one line per problem."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source, schema) from None


class Resolver(Protocol):
    """resolver's function: a path resolved, None kept."""

    @overload
    def __call__(self, p: Path) -> Path: ...
    @overload
    def __call__(self, p: None) -> None: ...
    @overload
    def __call__(self, p: Path | None) -> Path | None: ...


def resolver(source: str | Path) -> Resolver:
    """A function resolving relative paths against `source`'s folder (the working
    directory for in-memory documents)."""
    base = Path(source).resolve().parent if str(source) != "<memory>" else Path.cwd()

    @overload
    def resolve(p: Path) -> Path: ...
    @overload
    def resolve(p: None) -> None: ...
    @overload
    def resolve(p: Path | None) -> Path | None: ...
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    return resolve
