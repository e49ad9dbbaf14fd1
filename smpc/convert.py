"""PyTorch model -> a graph of ATen calls that runs on CrypTensors.

The model is captured with torch.export (no ONNX, no TorchScript), functionalised,
checked op by op against smpc.ops.OPS, and eval-mode BatchNorms are folded into
the convolution or linear layer before them (or into a per-channel affine map).
Every party converts the same architecture and gets the same graph; only the model
owner's parameter values are real, the others hold same-shaped placeholders.
"""

from __future__ import annotations

import hashlib
import logging
import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch.export.graph_signature import InputKind

from smpc import ops
from smpc.errors import ConversionError, UnsupportedOpError

aten = torch.ops.aten
_BATCH_NORM = aten._native_batch_norm_legit_no_training.default
_FOLDABLE = {aten.conv1d.default, aten.conv2d.default, aten.linear.default}


@dataclass
class Program:
    """A model ready to run on shares.

    Attributes:
        graph: functional ATen graph; placeholders are parameters, constants, the input.
        secret: parameter tensors by placeholder name, to be shared by the model owner.
        public: constant tensors that are part of the architecture, by placeholder name.
        input_name: placeholder name of the model input.
        input_shape: full input shape, batch included.
        output_shape: shape of the single output tensor.
        public_nodes: names of call nodes that read no secret value; they run as the
            plain ATen op (e.g. building a constant), so they need no entry in OPS.
    """

    graph: torch.fx.Graph
    secret: dict[str, torch.Tensor]
    public: dict[str, torch.Tensor]
    input_name: str
    input_shape: torch.Size
    output_shape: torch.Size
    public_nodes: frozenset[str] = frozenset()

    def architecture_fingerprint(self) -> str:
        """SHA-256 over the graph and parameter shapes (never over parameter values)."""
        h = hashlib.sha256(str(self.graph).encode())
        for name in sorted(self.secret):
            h.update(f"{name}:{tuple(self.secret[name].shape)}".encode())
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


def convert(model: torch.nn.Module, example_input: torch.Tensor) -> Program:
    """Capture `model` for one input shape and prepare it for secret-shared execution.

    Args:
        model: a PyTorch module; it is put in eval mode.
        example_input: a tensor with the exact input shape (batch included).

    Returns:
        The Program; raises UnsupportedOpError naming the module path and the op, or
        ConversionError when the model cannot take an input of this shape.
    """
    model.eval()
    shape = tuple(example_input.shape)
    try:
        # export logs the failing op's traceback itself; the user gets one line instead
        logging.disable(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model, (example_input,)).run_decompositions({})
    except Exception as exc:  # export reports shape errors as many exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"the model cannot take an input of shape {list(shape)}: {reason}") from None
    finally:
        logging.disable(logging.NOTSET)

    graph = exported.graph
    secret: dict[str, torch.Tensor] = {}
    public: dict[str, torch.Tensor] = {}
    input_names = []
    for spec in exported.graph_signature.input_specs:
        name = spec.arg.name
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = exported.state_dict.get(spec.target)
            if value is None:
                value = exported.constants[spec.target]
            secret[name] = value.detach().clone()
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            public[name] = exported.constants[spec.target].detach().clone()
        elif spec.kind == InputKind.USER_INPUT:
            input_names.append(name)
        else:
            raise ConversionError(f"unsupported model input kind {spec.kind.name}")
    if len(input_names) != 1:
        raise ConversionError(f"the model must take exactly one tensor input, it takes {len(input_names)}")

    outputs = list(graph.output_node().args[0])
    if len(outputs) != 1 or not isinstance(outputs[0], torch.fx.Node):
        raise ConversionError(f"the model must return exactly one tensor, it returns {len(outputs)} values")
    output_shape = outputs[0].meta["val"].shape

    _fold_batch_norms(graph, secret)
    public_nodes = _public_nodes(graph, set(secret) | set(input_names))
    _check_supported(graph, public_nodes)
    # drop what the graph no longer reads (e.g. num_batches_tracked, folded statistics)
    for node in list(graph.nodes):
        if node.op == "placeholder" and not node.users and node.name not in input_names:
            secret.pop(node.name, None)
            public.pop(node.name, None)
            graph.erase_node(node)
    for name, value in secret.items():
        if not value.is_floating_point():
            raise UnsupportedOpError(f"{name}: integer parameters cannot be secret-shared as fixed point")
    return Program(
        graph, secret, public, input_names[0], torch.Size(shape), torch.Size(output_shape), frozenset(public_nodes)
    )


def _public_nodes(graph: torch.fx.Graph, secret_placeholders: set[str]) -> set[str]:
    # a call is public when nothing it reads depends on a parameter or the input
    secret: set[torch.fx.Node] = set()
    public = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if node.name in secret_placeholders:
                secret.add(node)
        elif node.op == "call_function":
            if any(arg in secret for arg in node.all_input_nodes):
                secret.add(node)
            else:
                public.add(node.name)
    return public


def _check_supported(graph: torch.fx.Graph, public_nodes: set[str]) -> None:
    for node in graph.nodes:
        if node.op != "call_function" or node.name in public_nodes:
            continue
        if node.target not in ops.OPS:
            raise UnsupportedOpError(f"{module_path(node)}: {_op_name(node.target)} is not supported")
        reason = ops.unsupported_reason(node.target, node.args, node.kwargs)
        if reason:
            raise UnsupportedOpError(f"{module_path(node)}: {_op_name(node.target)}: {reason}")


def _op_name(target: Any) -> str:
    name = str(target)
    return name[: -len(".default")] if name.endswith(".default") else name


def _fold_batch_norms(graph: torch.fx.Graph, secret: dict[str, torch.Tensor]) -> None:
    # Eval-mode BatchNorm is x * s + t with s = w / sqrt(var + eps), t = b - mean * s.
    # Folded into the preceding conv/linear when that layer feeds only this BN; else
    # replaced by ops.channel_affine. The arithmetic happens on the owner's plaintext
    # weights before sharing, so no secret square root is ever computed.
    for bn in [n for n in graph.nodes if n.op == "call_function" and n.target is _BATCH_NORM]:
        x, weight, bias, mean, var, _momentum, eps = bn.args
        getters = list(bn.users)
        if any(u.target is not operator.getitem or u.args[1] != 0 for u in getters):
            raise UnsupportedOpError(f"{module_path(bn)}: batch norm statistics outputs are not supported")
        channels = secret[mean.name].shape[0]
        w = secret[weight.name] if weight is not None else torch.ones(channels)
        b = secret[bias.name] if bias is not None else torch.zeros(channels)
        scale = w / torch.sqrt(secret[var.name] + eps)
        shift = b - secret[mean.name] * scale

        producer = x if isinstance(x, torch.fx.Node) else None
        foldable = (
            producer is not None
            and producer.target in _FOLDABLE
            and len(producer.users) == 1
            and len(producer.args[1].users) == 1
            and (len(producer.args) < 3 or producer.args[2] is None or len(producer.args[2].users) == 1)
        )
        if foldable:
            w_node = producer.args[1]
            kernel = secret[w_node.name]
            secret[w_node.name] = kernel * scale.view(-1, *([1] * (kernel.dim() - 1)))
            old_bias = producer.args[2] if len(producer.args) > 2 else None
            base = secret[old_bias.name] if old_bias is not None else torch.zeros(channels)
            bias_name = old_bias.name if old_bias is not None else f"{bn.name}_folded_bias"
            secret[bias_name] = base * scale + shift
            if old_bias is None:
                with graph.inserting_before(_first_non_placeholder(graph)):
                    old_bias = graph.placeholder(bias_name)
                args = list(producer.args) + [None] * (3 - len(producer.args))
                args[2] = old_bias
                producer.args = tuple(args)
            result = producer
        else:
            scale_name, shift_name = f"{bn.name}_scale", f"{bn.name}_shift"
            secret[scale_name], secret[shift_name] = scale, shift
            with graph.inserting_before(_first_non_placeholder(graph)):
                scale_node = graph.placeholder(scale_name)
                shift_node = graph.placeholder(shift_name)
            with graph.inserting_before(bn):
                result = graph.call_function(ops.channel_affine, (x, scale_node, shift_node))
            result.meta = dict(bn.meta)
        for getter in getters:
            getter.replace_all_uses_with(result)
            graph.erase_node(getter)
        graph.erase_node(bn)


def _first_non_placeholder(graph: torch.fx.Graph) -> torch.fx.Node:
    return next(n for n in graph.nodes if n.op != "placeholder")
