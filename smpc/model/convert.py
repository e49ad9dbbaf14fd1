"""PyTorch model -> a graph of ATen calls that runs on CrypTensors.

The model is captured with torch.export (no ONNX, no TorchScript), functionalised,
checked op by op against smpc.model.ops.OPS, and eval-mode BatchNorms are folded into
the convolution or linear layer before them (or into a per-channel affine map).
Every party converts the same architecture and gets the same graph; only the model
owner's parameter values are real, the others hold same-shaped placeholders.
"""

from __future__ import annotations

import logging
import operator
import warnings
from typing import Any
from collections.abc import Callable

import torch
from torch.export.graph_signature import InputKind
from torch.fx.node import Argument, Target

from smpc.model import ops
from smpc.model.program import InputSpec, Program, module_path
from smpc.errors import ConversionError, UnsupportedOpError

aten = torch.ops.aten
_BATCH_NORM = aten._native_batch_norm_legit_no_training.default
_FOLDABLE = {aten.conv1d.default, aten.conv2d.default, aten.linear.default}


# graph nodes that only check metadata at trace time; they have no value on shares
_ASSERTIONS = {
    aten._assert_tensor_metadata.default,
    aten._assert_async.msg,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
}
# constants beyond this magnitude cannot be encoded in the ring (2^63 / 2^16 / 2^31 for a
# product): the large negatives of attention masks (float32's lowest, -inf) become MASK_VALUE
_HUGE = 1.0e9


def convert(model: torch.nn.Module, example_inputs: Any, example_kwargs: dict[str, Any] | None = None) -> Program:
    """Capture `model` for one set of input shapes and prepare it for secret-shared execution.

    Args:
        model: a PyTorch module (a Hugging Face model included); it is put in eval mode.
        example_inputs: a tensor, or a tuple of tensors, with the exact shapes (batch included).
        example_kwargs: tensors passed by keyword (e.g. ``attention_mask``).

    Returns:
        The Program; raises UnsupportedOpError listing every operation that cannot run on
        shares (each with its module path), or ConversionError when the model cannot take
        inputs of these shapes.
    """
    model.eval()
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = dict(example_kwargs or {})
    shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)] + [
        list(v.shape) for v in kwargs.values() if isinstance(v, torch.Tensor)
    ]
    try:
        # export logs the failing op's traceback itself; the user gets one line instead
        logging.disable(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model, args, kwargs).run_decompositions({})
    except Exception as exc:  # export reports shape errors as many exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shown = shapes[0] if len(shapes) == 1 else shapes
        raise ConversionError(f"the model cannot take an input of shape {shown}: {reason}") from None
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
            # weights and persistent float buffers (BatchNorm statistics) are the owner's
            # secret; non-persistent or integer buffers (position ids, rotary frequencies)
            # are part of the architecture
            persistent = spec.kind == InputKind.PARAMETER or getattr(spec, "persistent", True)
            if value.is_floating_point() and persistent:
                secret[name] = value.detach().clone()
            else:
                public[name] = value.detach().clone()
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            public[name] = exported.constants[spec.target].detach().clone()
        elif spec.kind == InputKind.USER_INPUT:
            input_names.append(name)
        else:
            raise ConversionError(f"unsupported model input kind {spec.kind.name}")
    if not input_names:
        raise ConversionError("the model takes no tensor input")

    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _ASSERTIONS and not node.users:
            graph.erase_node(node)
    _fold_batch_norms(graph, secret)
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    problems: list[str] = []
    inputs = tuple(_input_spec(placeholders[name], problems) for name in input_names)
    secret_nodes = _fold_public(graph, public, set(secret) | set(input_names))
    problems += _secret_indices(graph, secret_nodes)
    problems += _unsupported(graph)
    if problems:
        raise UnsupportedOpError("\n".join(dict.fromkeys(problems)))

    out_nodes = list(graph.output_node().args[0])
    if not out_nodes or not all(isinstance(n, torch.fx.Node) for n in out_nodes):
        raise ConversionError("every model output must be a tensor computed from the inputs or weights")
    out_spec = exported.module_call_graph[0].signature.out_spec
    names = _output_names(out_spec, len(out_nodes))
    outputs = tuple((name, tuple(n.meta["val"].shape)) for name, n in zip(names, out_nodes))
    # drop what the graph no longer reads (e.g. num_batches_tracked, folded statistics)
    for node in list(graph.nodes):
        if node.op == "placeholder" and not node.users and node.name not in input_names:
            secret.pop(node.name, None)
            public.pop(node.name, None)
            graph.erase_node(node)
    return Program(graph, secret, public, inputs, outputs, out_spec)


# shape-only steps between an ids input and its embedding lookups; on the one-hot rows
# they act on every dimension but the trailing one-hot axis
_ID_STEPS = {
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.expand.default,
    aten.unsqueeze.default,
    aten.slice.Tensor,
    aten.select.int,
    aten.clone.default,
    aten.alias.default,
    aten._to_copy.default,
    aten.contiguous.default,
}


# comparisons of ids with a constant (RoBERTa's padding test), read off the one-hot rows
_ID_TESTS: dict[Target, Callable[[Any, Any], Any]] = {aten.eq.Scalar: ops.ids_equal, aten.ne.Scalar: ops.ids_differ}


def _node(value: Argument) -> torch.fx.Node:
    # an argument that the graph holds as a node (torch.fx types every argument as any
    # Argument); anything else fails as reading a node's attribute from it would
    if not isinstance(value, torch.fx.Node):
        raise AttributeError(f"{type(value).__name__!r} argument is not a graph node")
    return value


def _optional_node(value: Argument) -> torch.fx.Node | None:
    # an optional node argument (a layer's bias or weight): None, else a node
    return None if value is None else _node(value)


def _int(value: Argument) -> int:
    # an integer argument (a dimension); anything else fails as using it as an index would
    if not isinstance(value, int):
        raise TypeError(f"expected an integer argument, got {type(value).__name__}")
    return value


def _input_spec(node: torch.fx.Node, problems: list[str]) -> InputSpec:
    value = node.meta["val"]
    shape = tuple(value.shape)
    if value.is_floating_point():
        return InputSpec(node.name, shape)
    steps, lookups, tests, others = [], [], [], set()
    frontier = [node]
    while frontier:
        current = frontier.pop()
        for user in current.users:
            if user.target is aten.embedding.default and user.args[1] is current:
                lookups.append(user)
            elif user.target in _ID_TESTS and user.args[0] is current and isinstance(user.args[1], int):
                tests.append(user)
            elif user.target in _ID_STEPS and user.args[0] is current:
                steps.append(user)
                frontier.append(user)
            else:
                others.add(_op_name(user.target))
    if not lookups:
        return InputSpec(node.name, shape, "binary")
    if others:
        problems.append(
            f"{node.name}: integer ids used by {', '.join(sorted(others))} besides embedding lookups are not supported"
        )
    depth = max(int(_node(u.args[0]).meta["val"].shape[0]) for u in lookups)
    for lookup in lookups:
        lookup.meta["one_hot_ids"] = True
    for test in tests:  # ids == c is the one-hot column c
        test.target = _ID_TESTS[test.target]
    for step in steps:  # the one-hot axis rides along at the end
        args = list(step.args)
        if step.target in (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default):
            sizes = args[1]
            if not isinstance(sizes, (list, tuple)):
                raise TypeError(f"{step.name}: expected a list of sizes, got {type(sizes).__name__}")
            args[1] = list(sizes) + [depth]
        elif step.target in (aten.unsqueeze.default, aten.slice.Tensor, aten.select.int):
            dim = _int(args[1]) if len(args) > 1 else 0
            if dim < 0:
                args = args + [0] * (2 - len(args))
                args[1] = dim - 1
        step.args = tuple(args)
    return InputSpec(node.name, shape, "ids", depth)


def _output_names(spec: Any, count: int) -> list[str]:
    context = getattr(spec, "context", None)
    if isinstance(context, (list, tuple)) and len(context) == count and all(isinstance(c, str) for c in context):
        return list(context)
    if count == 1:
        return ["output"]
    return [f"output_{i}" for i in range(count)]


def _fold_public(
    graph: torch.fx.Graph, public: dict[str, torch.Tensor], secret_placeholders: set[str]
) -> set[torch.fx.Node]:
    # Calls that read nothing secret (position ids, causal masks, rotary tables) are
    # computed here once; the values a secret call reads become public constants.
    # Huge constants (float32's lowest, -inf in attention masks) become MASK_VALUE.
    # Returns the nodes that hold secrets.
    secret: set[torch.fx.Node] = set()
    values: dict[torch.fx.Node, Any] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            if node.name in secret_placeholders:
                secret.add(node)
            else:
                values[node] = public[node.name]
        elif node.op == "call_function":
            uniform = _index_free(node, values)
            if uniform is not None:
                values[node] = uniform
            elif any(arg in secret for arg in node.all_input_nodes):
                secret.add(node)
                node.args = torch.fx.node.map_aggregate(node.args, _bounded_scalar)
                node.kwargs = torch.fx.node.map_aggregate(node.kwargs, _bounded_scalar)
            else:
                args = torch.fx.map_arg(node.args, lambda n: values[n])
                kwargs = torch.fx.map_arg(node.kwargs, lambda n: values[n])
                values[node] = node.target(*args, **kwargs)
    first = _first_non_placeholder(graph)
    for node in list(graph.nodes):
        if node.op != "call_function" or node in secret:
            continue
        readers = [u for u in node.users if u in secret or u.op == "output"]
        if readers:
            name = f"const_{node.name}"
            public[name] = _bounded_tensor(values[node])
            with graph.inserting_before(first):
                constant = graph.placeholder(name)
            constant.meta = dict(node.meta)
            for reader in readers:
                reader.replace_input_with(node, constant)
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and node not in secret and not node.users:
            graph.erase_node(node)
    return secret


def _index_free(node: torch.fx.Node, values: dict[torch.fx.Node, Any]) -> torch.Tensor | None:
    # A gather from a public tensor that is constant along the gathered axis does not
    # depend on the (secret) index: RoBERTa gathers its all-zero token type buffer at the
    # position ids. Returns the public result, or None.
    if node.target is not aten.gather.default or node.args[0] not in values:
        return None
    source, dim, index = values[_node(node.args[0])], node.args[1], node.args[2]
    if not isinstance(source, torch.Tensor) or not isinstance(index, torch.fx.Node) or index in values:
        return None
    dim = _int(dim)
    if source.shape[dim] == 0 or not torch.equal(source, source.narrow(dim, 0, 1).expand_as(source)):
        return None
    return torch.gather(source, dim, torch.zeros(tuple(index.meta["val"].shape), dtype=torch.long))


def _secret_indices(graph: torch.fx.Graph, secret: set[torch.fx.Node]) -> list[str]:
    # Lookups at an index computed on shares (not the data owner's one-hot ids) select by
    # a one-hot of the index (protocols.lookup); other indexing by a secret is refused.
    problems = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.embedding.default and node.args[1] in secret and not node.meta.get("one_hot_ids"):
            node.target = ops.lookup_secret_index
        elif node.target is aten.gather.default and node.args[2] in secret:
            node.target = ops.gather_secret_index
        elif node.target is aten.index_select.default and node.args[2] in secret:
            problems.append(f"{module_path(node)}: aten.index_select at a secret index is not supported")
        elif node.target is aten.index.Tensor and any(i in secret for i in node.args[1] if i is not None):
            problems.append(f"{module_path(node)}: aten.index at a secret index is not supported")
    return problems


def _bounded_scalar(value: Any) -> Any:
    if isinstance(value, float) and not abs(value) < _HUGE:
        return float(ops.MASK_VALUE) if value < 0 else -float(ops.MASK_VALUE)
    return value


def _bounded_tensor(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().clone().contiguous()
        if value.is_floating_point():
            value = torch.where(value >= _HUGE, -ops.MASK_VALUE, torch.where(value <= -_HUGE, ops.MASK_VALUE, value))
        return value
    return value


def _unsupported(graph: torch.fx.Graph) -> list[str]:
    problems = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target not in ops.OPS:
            problems.append(f"{module_path(node)}: {_op_name(node.target)} is not supported")
            continue
        reason = ops.unsupported_reason(node.target, node.args, node.kwargs)
        if reason:
            problems.append(f"{module_path(node)}: {_op_name(node.target)}: {reason}")
    return problems


def _op_name(target: Any) -> str:
    name = str(target)
    return name[: -len(".default")] if name.endswith(".default") else name


def _fold_batch_norms(graph: torch.fx.Graph, secret: dict[str, torch.Tensor]) -> None:
    # Eval-mode BatchNorm is x * s + t with s = w / sqrt(var + eps), t = b - mean * s.
    # Folded into the preceding conv/linear when that layer feeds only this BN; else
    # replaced by ops.channel_affine. The arithmetic happens on the owner's plaintext
    # weights before sharing, so no secret square root is ever computed.
    for bn in [n for n in graph.nodes if n.op == "call_function" and n.target is _BATCH_NORM]:
        x, weight_arg, bias_arg, mean_arg, var_arg, _momentum, eps = bn.args
        getters = list(bn.users)
        if any(u.target is not operator.getitem or u.args[1] != 0 for u in getters):
            raise UnsupportedOpError(f"{module_path(bn)}: batch norm statistics outputs are not supported")
        mean, var = _node(mean_arg), _node(var_arg)
        weight, bias = _optional_node(weight_arg), _optional_node(bias_arg)
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
            and len(_node(producer.args[1]).users) == 1
            and (len(producer.args) < 3 or producer.args[2] is None or len(_node(producer.args[2]).users) == 1)
        )
        if foldable and producer is not None:  # foldable: a producer
            w_node = _node(producer.args[1])
            kernel = secret[w_node.name]
            secret[w_node.name] = kernel * scale.view(-1, *([1] * (kernel.dim() - 1)))
            old_bias = _optional_node(producer.args[2]) if len(producer.args) > 2 else None
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
            result.meta["val"] = bn.meta["val"][0]  # the normalized output, not the statistics
        for getter in getters:
            getter.replace_all_uses_with(result)
            graph.erase_node(getter)
        graph.erase_node(bn)


def _first_non_placeholder(graph: torch.fx.Graph) -> torch.fx.Node:
    first: torch.fx.Node = next(n for n in graph.nodes if n.op != "placeholder")
    return first
