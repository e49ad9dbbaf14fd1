"""Run a converted Program on secret-shared values, node by node."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import torch

from smpc import compat, fixed_point  # noqa: F401  (compat first: it makes crypten importable on this torch)
import crypten

from smpc.model.program import Program, layer_label, op_label
from smpc.meter import LayerMeter, numel, piece
from smpc.model.ops import OPS
from smpc.protocols.fixed import FIXED_OPERAND, FusedLinears, fused_linears, unwrap
from smpc.protocols.fss import bounded_comparisons


def run_program(
    program: Program,
    params: dict[str, Any],
    inputs: Any,
    meter: LayerMeter | None = None,
    observe: Callable[[torch.fx.Node, tuple[Any, ...], Any], None] | None = None,
    checks: Callable[[torch.fx.Node, tuple[Any, ...]], None] | None = None,
    widths: Callable[[torch.fx.Node, tuple[Any, ...]], int | None] | None = None,
) -> list[Any]:
    """Evaluate `program` on shares (or, for checking a conversion, on plain tensors).

    Args:
        program: the converted model (identical at every party).
        params: secret parameters (CrypTensors) by placeholder name.
        inputs: the inputs by name (CrypTensors of each InputSpec's share_shape), or the
            one input of a single-input model.
        meter: if given, each node's communication and time are charged to the
            module that issued it (its path and class) and to the node's op.
        observe: if given, called with each call node, its argument values and its result
            (the range checks of a plaintext run use it).
        checks: if given, called with each call node and its argument values before it
            runs (the in-protocol range checks, smpc.model.calibrate.RangeChecks).

    Returns:
        The outputs (still secret-shared), in the order of program.outputs.
    """
    if not isinstance(inputs, dict):
        inputs = {program.inputs[0].name: inputs}
    env: dict[torch.fx.Node, Any] = {}
    remaining = {node: len(node.users) for node in program.graph.nodes}
    # linear layers that read one input, with their weights joined (by fixed.open_masks):
    # one product for all, at the first of them; each then adds its own bias
    fused = {node: group for group in fused_linears(program) if group.name in params for node in group.nodes}
    computed: dict[torch.fx.Node, Any] = {}
    # a product of two secrets that only a public scaling reads (attention's scores times
    # 1/sqrt(d)): the scaling folded into the product's truncation, one round fewer
    scaled = _scaled_products(program)
    folded: dict[torch.fx.Node, torch.fx.Node] = {}  # the scaling node -> its product's

    def value(arg: Any) -> Any:
        return torch.fx.map_arg(arg, lambda n: env[n])

    for node in program.graph.nodes:
        if node.op == "placeholder":
            # a graph read back from program.json may have renamed a placeholder (torch.fx
            # gives `input` the name `input_1`: it shadows a builtin); its target keeps the name
            name = (
                node.name if node.name in inputs or node.name in params or node.name in program.public else node.target
            )
            if name in inputs:
                env[node] = inputs[name]
            elif name in params:
                env[node] = params[name]
            else:
                env[node] = program.public[name]
        elif node.op == "call_function":
            # every call reads a secret: calls on public values were computed at conversion
            args = value(node.args)
            # a weight with a session mask (FixedWeight) is a plain CrypTensor to every
            # op but the products that read it as their fixed operand
            keep = FIXED_OPERAND.get(node.target)
            args = tuple(a if i == keep else torch.fx.node.map_aggregate(a, unwrap) for i, a in enumerate(args))
            if checks is not None:
                with piece("range checks") as checked:
                    checks(node, args)
                    checked.elements = numel(args)
            if node in fused:
                env[node] = _fused_linear(node, fused[node], args, params, computed)
            elif node in folded:
                env[node] = env[folded.pop(node)]
            elif node in scaled and all(isinstance(a, crypten.CrypTensor) for a in args):
                user, divisor = scaled[node]
                env[node] = fixed_point.matmul_divided(args[0], args[1], divisor)
                folded[user] = node
            elif widths is None:
                env[node] = OPS[node.target](*args, **value(node.kwargs))
            else:
                with bounded_comparisons(widths(node, args)):
                    env[node] = OPS[node.target](*args, **value(node.kwargs))
            if observe is not None:
                observe(node, args, env[node])
            if meter is not None:
                meter.charge(layer_label(node), op_label(node), numel(env[node]))
            # free intermediate shares as soon as their last reader has run
            for arg in node.all_input_nodes:
                remaining[arg] -= 1
                if remaining[arg] == 0 and arg.op != "placeholder":
                    env.pop(arg, None)
        elif node.op == "output":
            return list(value(node.args[0]))
    raise RuntimeError("graph has no output node")


def _scaled_products(program: Program) -> dict[torch.fx.Node, tuple[torch.fx.Node, int]]:
    # matmul nodes whose only reader multiplies (or divides) them by a public number that
    # a truncation's divisor can carry (fixed_point.scaled_divisor): node -> (reader, divisor)
    found = {}
    scalings = {torch.ops.aten.mul.Tensor: False, torch.ops.aten.mul.Scalar: False}
    scalings |= {torch.ops.aten.div.Tensor: True, torch.ops.aten.div.Scalar: True}
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in scalings or node.kwargs or len(node.args) != 2:
            continue
        product, factor = node.args
        if (
            not isinstance(product, torch.fx.Node)
            or product.target != torch.ops.aten.matmul.default
            or len(product.users) != 1
            or isinstance(factor, bool)
            or not isinstance(factor, (int, float))
        ):
            continue
        divisor = fixed_point.scaled_divisor(1 / factor if scalings[node.target] else factor) if factor else None
        if divisor is not None:
            found[product] = (node, divisor)
    return found


def _fused_linear(
    node: torch.fx.Node, group: FusedLinears, args: tuple[Any, ...], params: dict[str, Any], computed: dict[Any, Any]
) -> Any:
    # this layer's output: its part of the group's one product (made at the first layer
    # of the group to run), plus its bias
    linear = OPS[torch.ops.aten.linear.default]
    if node not in computed:
        out = linear(args[0], params[group.name])
        start = 0
        for member, size in zip(group.nodes, group.sizes):
            computed[member] = out.narrow(-1, start, size)
            start += size
    part = computed.pop(node)
    bias = args[2] if len(args) > 2 else None
    return part if bias is None else OPS[torch.ops.aten.add.Tensor](part, bias)
