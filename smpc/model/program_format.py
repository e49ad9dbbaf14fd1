"""A converted Program as files: the architecture travels as data, never as code.

`program.json` holds the graph (each node: its operation by name, its arguments as JSON
values and references to earlier nodes), the inputs and outputs, and the shapes of the
secret parameters; `constants.safetensors` holds the public constants (position ids,
masks, rotary tables). Loading looks each operation name up in the table built from
smpc.model.ops.OPS, so only operations the project implements can be named; nothing is
unpickled or imported, and a party needs neither the model's Python code nor the library
it was written with. The secret weights are not part of it: the model owner keeps them in
its own `weights.safetensors` (smpc.model.model_dir).
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from smpc.model import ops
from smpc.model.program import InputSpec, Program
from smpc.errors import ArtifactError

FORMAT = "smpc-program"
VERSION = 1
GRAPH_FILE = "program.json"
CONSTANTS_FILE = "constants.safetensors"
# bounds checked before anything is built from a file
MAX_NODES = 200_000
MAX_DIMS = 16

_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format}


def op_name(target: Any) -> str:
    """The stable name of an operation in OPS (e.g. ``aten.add.Tensor``)."""
    if target is operator.getitem:
        return "getitem"
    if getattr(target, "__module__", None) == ops.__name__:
        return f"smpc.{target.__name__}"  # smpc's own operations (smpc.channel_affine)
    return str(target)


_TARGETS = {op_name(t): t for t in ops.OPS}


def _encode(value: Any) -> Any:
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": "cpu"}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise ArtifactError(f"cannot store a graph argument of type {type(value).__name__}")


def save(program: Program, directory: Path) -> None:
    """Write `program` (without its secret values) as program.json + constants.safetensors."""
    nodes = []
    for node in program.graph.nodes:
        entry: dict[str, Any] = {"name": node.name, "op": node.op}
        if node.op == "call_function":
            entry["target"] = op_name(node.target)
            entry["args"] = _encode(list(node.args))
            entry["kwargs"] = {k: _encode(v) for k, v in node.kwargs.items()}
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                entry["module"] = [path, str(kind)]
        elif node.op == "output":
            entry["args"] = _encode(list(node.args[0]))
        nodes.append(entry)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "inputs": [{"name": s.name, "shape": list(s.shape), "kind": s.kind, "depth": s.depth} for s in program.inputs],
        "outputs": [{"name": n, "shape": list(shape)} for n, shape in program.outputs],
        "secret": {k: list(v.shape) for k, v in sorted(program.secret.items())},
        "nodes": nodes,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GRAPH_FILE).write_text(json.dumps(document, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in program.public.items()}, str(directory / CONSTANTS_FILE))


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in value)
    ):
        raise ArtifactError(f"{where}: expected a shape (at most {MAX_DIMS} non-negative integers), got {value!r}")
    return tuple(value)


def load(directory: Path) -> Program:
    """Read a program written by `save`. The secret parameters come back as zeros of
    their shapes: only the model owner replaces them with its weights.

    Raises ArtifactError naming the file and what is wrong with it.
    """
    path = directory / GRAPH_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: program file not found (pack the model with smpc.pack or `smpc model pack`)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise ArtifactError(f"{path}: expected format {FORMAT} version {VERSION}")
    constants_path = directory / CONSTANTS_FILE
    try:
        public = load_file(str(constants_path)) if constants_path.is_file() else None
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ArtifactError(f"{constants_path}: not a readable safetensors file ({exc})") from None
    if public is None:
        raise ArtifactError(f"{constants_path}: constants file not found")
    nodes = document.get("nodes")
    if not isinstance(nodes, list) or not nodes or len(nodes) > MAX_NODES:
        raise ArtifactError(f"{path}: nodes: expected a list of 1..{MAX_NODES} nodes")
    try:
        inputs = tuple(
            InputSpec(str(i["name"]), _shape(i["shape"], f"{path}: inputs"), str(i["kind"]), int(i["depth"]))
            for i in document["inputs"]
        )
        outputs = tuple((str(o["name"]), _shape(o["shape"], f"{path}: outputs")) for o in document["outputs"])
        secret = {str(k): torch.zeros(_shape(v, f"{path}: secret.{k}")) for k, v in document["secret"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed inputs, outputs or secret shapes ({exc})") from None
    if any(s.kind not in ("float", "ids", "binary") for s in inputs):
        raise ArtifactError(f"{path}: inputs: kind must be float, ids or binary")

    graph = torch.fx.Graph()
    built: dict[str, torch.fx.Node] = {}

    def decode(value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [decode(v, where) for v in value]
        if isinstance(value, dict):
            if len(value) != 1:
                raise ArtifactError(f"{path}: {where}: malformed argument {value!r}")
            ((kind, inner),) = value.items()
            if kind == "node":
                if inner not in built:
                    raise ArtifactError(f"{path}: {where}: refers to node {inner!r} before it is defined")
                return built[inner]
            tables: dict[str, dict[str, Any]] = {"dtype": _DTYPES, "layout": _LAYOUTS, "memory_format": _MEMORY_FORMATS}
            table = tables.get(kind)
            if table is not None:
                if inner not in table:
                    raise ArtifactError(f"{path}: {where}: unknown {kind} {inner!r}")
                return table[inner]
            if kind == "device":
                return torch.device("cpu")
            if kind == "float" and inner in ("inf", "-inf", "nan"):
                return float(inner)
            if kind == "dict" and isinstance(inner, dict):
                return {str(k): decode(v, where) for k, v in inner.items()}
            raise ArtifactError(f"{path}: {where}: malformed argument {value!r}")
        return value

    output_seen = False
    for i, entry in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ArtifactError(f"{path}: {where}: expected a node with a name")
        name, op = entry["name"], entry.get("op")
        if name in built:
            raise ArtifactError(f"{path}: {where}: node name {name!r} is used twice")
        if op == "placeholder":
            if name not in secret and name not in public and name not in {s.name for s in inputs}:
                raise ArtifactError(
                    f"{path}: {where}: placeholder {name!r} is neither an input, a parameter nor a constant"
                )
            built[name] = graph.placeholder(name)
        elif op == "call_function":
            target_name: Any = entry.get("target")  # unchecked JSON: any value, looked up as it is
            target = _TARGETS.get(target_name)
            if target is None:
                raise ArtifactError(f"{path}: {where}: unknown operation {entry.get('target')!r}")
            kwargs = entry.get("kwargs", {})
            if not isinstance(entry.get("args"), list) or not isinstance(kwargs, dict):
                raise ArtifactError(f"{path}: {where}: args must be a list and kwargs a mapping")
            node = graph.create_node(
                "call_function",
                target,
                tuple(decode(entry["args"], where)),
                {str(k): decode(v, where) for k, v in kwargs.items()},
                name=name,
            )
            module = entry.get("module")
            if isinstance(module, list) and len(module) == 2 and all(isinstance(m, str) for m in module):
                node.meta["nn_module_stack"] = {"m": tuple(module)}
            built[name] = node
        elif op == "output":
            graph.output(tuple(decode(entry.get("args", []), where)))
            output_seen = True
        else:
            raise ArtifactError(f"{path}: {where}: unknown node kind {op!r}")
    if not output_seen:
        raise ArtifactError(f"{path}: the graph has no output")
    missing = sorted(n for n in list(public) + list(secret) if n not in built)
    if missing:
        raise ArtifactError(f"{path}: tensors without a placeholder: {missing[:5]}")
    return Program(graph, secret, dict(public), inputs, outputs)
