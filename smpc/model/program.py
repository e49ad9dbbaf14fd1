"""The program type: a model converted to run on shares (its graph of ATen calls, its
secret and public tensors, its inputs and outputs), and the labels its nodes carry in
the cost profile. smpc.model.convert makes one; program_format stores it; execute runs it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from smpc.errors import ConversionError


@dataclass(frozen=True)
class InputSpec:
    """One model input as the data owner shares it.

    Attributes:
        name: the graph placeholder (the model's argument name, e.g. ``input_ids``).
        shape: the full shape the model takes, batch first.
        kind: ``float`` (fixed point), ``ids`` (integer ids used only for embedding
            lookups: shared as one-hot rows of width `depth`), or ``binary`` (integer or
            boolean 0/1 values such as an attention mask).
        depth: the number of distinct ids (the embedding's rows), for ``ids``.
    """

    name: str
    shape: tuple[int, ...]
    kind: str = "float"
    depth: int = 0

    @property
    def share_shape(self) -> tuple[int, ...]:
        """Shape of the secret-shared tensor (one-hot rows for ids)."""
        return self.shape + (self.depth,) if self.kind == "ids" else self.shape

    def check(self, values: torch.Tensor, where: str = "input") -> None:
        """ConversionError naming the input when `values` (any number of rows) do not fit:
        ids outside the vocabulary, a mask that is not 0/1, fractional integers."""
        if tuple(values.shape[1:]) != self.shape[1:]:
            raise ConversionError(
                f"{where}: {self.name}: expected rows of shape {list(self.shape[1:])}, got {list(values.shape[1:])}"
            )
        self.check_values(values, where)

    def check_values(self, values: torch.Tensor, where: str = "input") -> None:
        """`check` without the shape (a service's client sends sequences of any length)."""
        if self.kind == "float":
            return
        if values.is_floating_point() and not torch.equal(values, values.round()):
            raise ConversionError(f"{where}: {self.name}: expected integers, got fractional values")
        values = values.long()
        if self.kind == "ids":
            bad = (values < 0) | (values >= self.depth)
            if bad.any():
                raise ConversionError(
                    f"{where}: {self.name}: id {int(values[bad][0])} is outside the vocabulary 0..{self.depth - 1}"
                )
        elif ((values != 0) & (values != 1)).any():
            bad = values[(values != 0) & (values != 1)]
            raise ConversionError(f"{where}: {self.name}: expected 0/1 values (a mask), got {int(bad[0])}")

    def encode(self, values: torch.Tensor, where: str = "input") -> torch.Tensor:
        """The float tensor a data owner shares for `values` (rows of this input): one-hot
        rows for ids, 0/1 floats for a mask; checked first (see `check`)."""
        self.check(values, where)
        if self.kind == "ids":
            return torch.nn.functional.one_hot(values.long(), self.depth).float()
        return values.float()


@dataclass
class Program:
    """A model ready to run on shares.

    Attributes:
        graph: functional ATen graph; placeholders are parameters, constants, the inputs.
            Every call reads a secret value (calls on public values alone are computed
            at conversion and become constants).
        secret: parameter tensors by placeholder name, to be shared by the model owner.
        public: constant tensors that are part of the architecture, by placeholder name.
        inputs: the model inputs, in call order.
        outputs: (name, shape) of each output tensor, in the order the graph returns them;
            names are the fields of a ModelOutput (or dict), else ``output`` / ``output_i``.
        out_spec: how to rebuild the model's own output structure (in-process only).
    """

    graph: torch.fx.Graph
    secret: dict[str, torch.Tensor]
    public: dict[str, torch.Tensor]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    out_spec: Any = None

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def input_shape(self) -> torch.Size:
        return torch.Size(self.inputs[0].shape)

    @property
    def output_shape(self) -> torch.Size:
        return torch.Size(self.outputs[0][1])

    def architecture_fingerprint(self) -> str:
        """SHA-256 over the graph, inputs, outputs and parameter shapes (never values)."""
        h = hashlib.sha256(str(self.graph).encode())
        h.update(repr((self.inputs, self.outputs)).encode())
        for name in sorted(self.secret):
            h.update(f"{name}:{tuple(self.secret[name].shape)}".encode())
        for name in sorted(self.public):
            h.update(f"{name}:{tuple(self.public[name].shape)}:".encode())
            h.update(self.public[name].contiguous().numpy().tobytes())
        return h.hexdigest()


def module_path(node: torch.fx.Node) -> str:
    """Dotted path of the nn.Module that issued `node` ('<model>' for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path or "<model>"


def layer_label(node: torch.fx.Node) -> str:
    """The module that issued `node` with its class, e.g. 'features.0 Conv2d'."""
    stack = node.meta.get("nn_module_stack") or {}
    kind = str(list(stack.values())[-1][1]).rsplit(".", 1)[-1].rstrip("'>") if stack else ""
    return f"{module_path(node)} {kind}".strip()


def op_label(node: torch.fx.Node) -> str:
    """The short name of the operation `node` calls, e.g. 'linear', '_softmax', 'embedding'."""
    target = node.target
    name = getattr(target, "_opname", None) or getattr(target, "__name__", None) or str(target)
    return str(name)
