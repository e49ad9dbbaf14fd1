"""The reference pages, generated from the code at every build (mkdocs-gen-files runs this).

- reference/config.md: every key of the config schema (smpc.config), its type, default,
  rule and the comment the schema gives it, after the hand-written introduction in
  docs/_snippets/config-intro.md;
- reference/cli.md: every command's --help, from its own argparse parser;
- reference/errors.md: the error families (smpc.errors and the other roots) and exit codes;
- explanation/states.md: the party's phases in the order its workloads call them, and the
  dealer protocol's messages and states (smpc.dealer).

Nothing here is edited by hand after generation: change the code, and the page follows.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

import smpc.config  # noqa: E402


# ---------------------------------------------------------------- the config schema


def _comments(cls: type) -> dict[str, str]:
    """The comment that documents each field of `cls`: on the field's own line(s), or on
    the comment lines right above it (the schema's own way of documenting keys)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    found: dict[str, str] = {}
    body = ast.parse(source).body[0].body
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            parts = [comments[line] for line in range(node.lineno, node.end_lineno + 1) if line in comments]
            above, line = [], node.lineno - 1
            while line in comments and source.splitlines()[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above + parts)
            found[node.target.id] = re.sub(r"\s*noqa.*$", "", text)
    return found


def _type_name(annotation: typing.Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}.get(name, name)


def _rule(field: typing.Any) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}
    rules = []
    for meta in field.metadata:
        for attr, word in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                rules.append(f"{word} {value}{' items' if 'length' in attr else ''}")
    return ", ".join(rules)


def _default(field: typing.Any) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if isinstance(value, BaseModel):
        return "(the section's defaults)"
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(key path, schema) of every section, the top level first, in schema order."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        for inner in [field.annotation, *typing.get_args(field.annotation)]:
            inner_args = typing.get_args(inner)
            candidates = [inner, *inner_args]
            for cand in candidates:
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    suffix = (
                        "[]"
                        if typing.get_origin(inner) is tuple or typing.get_origin(field.annotation) is tuple
                        else ""
                    )
                    path = f"{prefix}.{name}{suffix}" if prefix else f"{name}{suffix}"
                    if all(p != path for p, _ in out):
                        out += _sections(cand, path)
    return out


def config_page() -> str:
    intro = (ROOT / "docs" / "_snippets" / "config-intro.md").read_text()
    lines = [
        "# Configuration",
        "",
        "<!-- generated from smpc/config/schema.py by docs/_gen/reference.py: edit the schema, not this page -->",
        "",
        intro.rstrip(),
        "",
        "## Every key",
        "",
        "Generated from the schema (`smpc/config/schema.py`) at every build of this site: each",
        "key's type, default and rule, and what the schema's own comment says of it. Unknown",
        "keys are refused. The rules that relate several keys are the named functions of",
        "`smpc/config/rules.py`; what a config resolves to (the truncation run, the transport,",
        "the processes) is `Config.plan` (`smpc/config/plan.py`).",
    ]
    for path, model in _sections(smpc.config.Config):
        comments = _comments(model)
        lines += ["", f"### `{path}`" if path else "### top level", ""]
        doc = model.__dict__.get("__doc__")  # the section's own docstring, never pydantic's
        if doc and model is not smpc.config.Config:
            lines += [" ".join(doc.split()), ""]
        lines += ["| key | type | default | rule | what it is |", "| --- | --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = f"{path}.{name}" if path else name
            what = comments.get(name, "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {_rule(field)} | {what} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command line

# (argv before --help): every command of `smpc` (the command table, launch/cli.py)
COMMANDS = [
    ["launch"],
    ["party"],
    ["dealer"],
    ["serve"],
    ["query"],
    ["keys", "init"],
    ["keys", "add"],
    ["keys", "show"],
    ["keys", "rotate"],
    ["keys", "request"],
    ["keys", "sign"],
    ["keys", "revoke"],
    ["model", "pack"],
    ["model", "sign"],
    ["model", "calibrate"],
    ["model", "verify"],
    ["open"],
    ["bench"],
]


def _help(argv: list[str]) -> str:
    from launch import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main([*argv, "--help"])
        except SystemExit:
            pass
    return out.getvalue().rstrip()


def cli_page() -> str:
    from launch import cli

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the same page everywhere
    lines = [
        "# Command line",
        "",
        "<!-- generated from the commands' parsers by docs/_gen/reference.py -->",
        "",
        "Every command is `smpc COMMAND ...` (installed with the package; `python -m launch",
        "COMMAND ...` is the same, and is how the launcher starts each party and the dealer).",
        "Each section below is the command's own `--help`, from the command table",
        "(`launch/cli.py`), generated at every build of this site.",
        "Exit codes are in [Errors and exit codes](errors.md).",
        "",
        "## smpc",
        "",
        "```",
        cli.USAGE.rstrip(),
        "```",
    ]
    for argv in COMMANDS:
        lines += ["", f"## smpc {' '.join(argv)}", "", "```", _help(argv), "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- errors and exit codes


def error_classes() -> list[type]:
    """Every exception smpc raises for a user to see: SmpcError and its subclasses, in
    the order of the tree (each module that defines some is imported first)."""
    from smpc import errors, wire  # noqa: F401
    from smpc.dealer import states  # noqa: F401
    from smpc.serve import client, queries  # noqa: F401

    def walk(cls: type) -> list[type]:
        subs = sorted(cls.__subclasses__(), key=lambda c: c.__qualname__)
        return [cls] + [c for sub in subs if sub.__module__.startswith("smpc") for c in walk(sub)]

    return walk(errors.SmpcError)


def _what(cls: type) -> tuple[str, str]:
    # a class's docstring: what happened (first paragraph), what to do (second)
    parts = [" ".join(p.split()) for p in (inspect.getdoc(cls) or "").split("\n\n")]
    return parts[0], (parts[1] if len(parts) > 1 else "")


def errors_page() -> str:
    from smpc.records import INTERNAL

    lines = [
        "# Errors and exit codes",
        "",
        "<!-- generated from the exception classes by docs/_gen/reference.py -->",
        "",
        "A mistake a user can act on (a config, a file, a key, a peer that breaks the protocol)",
        "is one `error:` line naming the file, key, party or client, and no traceback. Every",
        "command exits with:",
        "",
        "| exit code | meaning |",
        "| --- | --- |",
        "| 0 | done |",
        "| 2 | a user's mistake or a failed run, reported in one `error:` line per problem (an `SmpcError`) |",
        "| 1 | an internal error (a bug: please report it with the traceback) |",
        "| 130 | interrupted (Ctrl-C); every process was stopped |",
        "",
        "## Error codes",
        "",
        "Every error is an `SmpcError` with a stable code; a process that fails writes it in",
        "its failure record (`RUN_DIR/NAME.error.json`: party, message, time, code; `code` is",
        f"`{INTERNAL}` for an internal error) and its audit log. Each code has a page.",
        "",
        "| code | exception | what happened |",
        "| --- | --- | --- |",
    ]
    for cls in error_classes():
        what, _ = _what(cls)
        lines.append(f"| [`{cls.code}`](errors/{cls.code}.md) | `{cls.__module__}.{cls.__qualname__}` | {what} |")
    return "\n".join(lines) + "\n"


def error_page(cls: type) -> str:
    what, todo = _what(cls)
    parents = [c for c in cls.__mro__[1:] if hasattr(c, "code")]
    lines = [
        f"# Error `{cls.code}`",
        "",
        "<!-- generated from the exception class by docs/_gen/reference.py -->",
        "",
        f"`{cls.__module__}.{cls.__qualname__}`"
        + (
            f", a kind of `{parents[0].__qualname__}` (code [`{parents[0].code}`]({parents[0].code}.md))"
            if parents
            else ""
        )
        + ".",
        "",
        f"**What happened.** {what}",
        "",
        f"**What to do.** {todo}",
        "",
        "[All error codes](../errors.md)",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the processes' states


def _calls_on(path: Path, name: str) -> list[str]:
    """The methods called on `name` in `path`, in source order (first call of each)."""
    order: list[str] = []
    for node in sorted(
        ast.walk(ast.parse(path.read_text())), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))
    ):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == name
            and node.func.attr not in order
        ):
            order.append(node.func.attr)
    return order


def states_page() -> str:
    from parties.party import Party
    from smpc.dealer import messages, states

    readings = {"stats"}  # a reading of the party's meters, not a phase
    one_off = [m for m in _calls_on(ROOT / "parties" / "one_off.py", "party") if m not in readings]
    service = [m for m in _calls_on(ROOT / "parties" / "service.py", "party") if m not in readings]
    lines = [
        "# The processes' states",
        "",
        "<!-- generated from parties/ and smpc/dealer/ by docs/_gen/reference.py -->",
        "",
        "## A party's phases",
        "",
        "A party is one object with phases (`parties/party.py`); a one-off run",
        "(`parties/one_off.py`) and a service (`parties/service.py`) call them in this order",
        "(read from their code at every build of this site), and differ only in their workload:",
        "",
        f"- one-off run: {' → '.join(f'`{m}`' for m in one_off)}",
        f"- service: {' → '.join(f'`{m}`' for m in service)}",
        "",
        "| phase | what it does |",
        "| --- | --- |",
    ]
    for method in dict.fromkeys(one_off + service):
        doc = inspect.getdoc(getattr(Party, method, None)) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"| `{method}` | {first} |")
    lines += [
        "",
        "`compute(batch)` is the one compute path both workloads run for every batch.",
        "",
        "## The dealer protocol",
        "",
        " ".join(inspect.getdoc(states).split("\n\n")[0].split()),
        "",
    ]
    for cls in (states.RollCall, states.StreamState):
        lines.append(f"- `{cls.__name__}`: {' '.join((inspect.getdoc(cls) or '').split())}")
    lines += [
        "",
        "Its messages (`smpc/dealer/messages.py`), one typed schema per kind, every field checked on arrival:",
        "",
        "| kind | fields |",
        "| --- | --- |",
    ]
    for cls in typing.get_args(messages.Message):
        fields = (
            ", ".join(
                f"`{f.name}`: {_type_name(f.type) if not isinstance(f.type, str) else f.type}"
                for f in dataclasses.fields(cls)
            )
            or "(none)"
        )
        kind = messages._KIND_OF[cls].name if cls in messages._KIND_OF else cls.__name__.upper()  # the wire's name
        lines.append(f"| `{kind}` | {fields} |")
    return "\n".join(lines) + "\n"


PAGES = {
    "reference/config.md": config_page,
    "reference/cli.md": cli_page,
    "reference/errors.md": errors_page,
    "explanation/states.md": states_page,
}
# a page per error code
PAGES.update({f"reference/errors/{cls.code}.md": (lambda cls=cls: error_page(cls)) for cls in error_classes()})

if __name__ == "__main__":
    # `python docs/_gen/reference.py`: refresh the copies kept in docs/ for readers of the
    # repository (the site regenerates them at every build)
    for page, make in PAGES.items():
        (ROOT / "docs" / page).parent.mkdir(exist_ok=True)
        (ROOT / "docs" / page).write_text(make())
elif __name__ == "<run_path>":  # run by mkdocs-gen-files at every build (imported, e.g. by a test: nothing)
    for page, make in PAGES.items():
        with mkdocs_gen_files.open(page, "w") as f:
            f.write(make())
