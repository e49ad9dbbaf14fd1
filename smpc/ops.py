"""ATen operations executed on CrypTensors: the table the interpreter dispatches through.

Values are either CrypTensors (secret: weights, inputs and everything computed from
them) or plain torch tensors (public: constants that are part of the architecture).
Every function accepts both; an operation on public values alone runs in plain torch.
Only targets listed in OPS are executable; anything else is rejected at conversion.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Sequence

import crypten
import torch

aten = torch.ops.aten


def is_secret(value: Any) -> bool:
    """True for a CrypTensor (secret-shared value)."""
    return isinstance(value, crypten.CrypTensor)


def to_secret(value: Any) -> Any:
    # A public tensor as a CrypTensor: party 0 holds it, the others a zero-sharing.
    # Purely local (pseudo-random zero shares from shared seeds), no round trip.
    if is_secret(value):
        return value
    return crypten.cryptensor(torch.as_tensor(value, dtype=torch.float32), src=0)


def _index(dim: int, key: Any) -> tuple:
    return (slice(None),) * dim + (key,)


# ---- arithmetic ---------------------------------------------------------------


def add(a: Any, b: Any, alpha: float = 1) -> Any:
    if alpha != 1:
        b = b * alpha
    if is_secret(a) or not is_secret(b):
        return a + b
    return b + a


def sub(a: Any, b: Any, alpha: float = 1) -> Any:
    if alpha != 1:
        b = b * alpha
    if is_secret(a) or not is_secret(b):
        return a - b
    return -b + a


def rsub(a: Any, b: Any, alpha: float = 1) -> Any:
    return sub(b, a * alpha if alpha != 1 else a)


def mul(a: Any, b: Any) -> Any:
    if is_secret(a) or not is_secret(b):
        return a * b
    return b * a


def div(a: Any, b: Any) -> Any:
    if is_secret(b):
        return mul(a, b.reciprocal())
    return a / b if not is_secret(a) else a.div(b)


def matmul(a: Any, b: Any) -> Any:
    if is_secret(a):
        return a.matmul(b)
    if is_secret(b):
        # public @ secret, written as (secret^T @ public^T)^T
        return b.transpose(-1, -2).matmul(a.transpose(-1, -2)).transpose(-1, -2)
    return torch.matmul(a, b)


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    out = matmul(x, weight.t() if weight.dim() == 2 else weight)
    return out if bias is None else add(out, bias)


def _conv(dims: int, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if not is_secret(x) and not is_secret(weight):
        fn = torch.nn.functional.conv1d if dims == 1 else torch.nn.functional.conv2d
        return fn(x, weight, bias, stride, padding, dilation, groups)
    x = to_secret(x)
    fn = x.conv1d if dims == 1 else x.conv2d
    out = fn(weight, stride=_tuple(stride), padding=_tuple(padding), dilation=_tuple(dilation), groups=groups)
    if bias is None:
        return out
    return add(out, bias.view(1, -1, *([1] * dims)))


def conv1d(*args):
    return _conv(1, *args)


def conv2d(*args):
    return _conv(2, *args)


def channel_affine(x: Any, scale: Any, shift: Any) -> Any:
    """x * scale + shift per channel (dim 1): an eval-mode BatchNorm with its
    statistics pre-folded into scale and shift by the model owner (convert.py)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return add(mul(x, scale.view(*shape)), shift.view(*shape))


def _reduce(method: str, x: Any, dims: Sequence[int] | int | None, keepdim: bool) -> Any:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(x.dim()))
    if isinstance(dims, int):
        dims = [dims]
    dims = sorted((d % x.dim() for d in dims), reverse=True)
    count = 1
    for d in dims:
        count *= x.size(d)
        x = x.sum(d, keepdim=keepdim)
    return x if method == "sum" else x * (1.0 / count)


def mean(x, dims=None, keepdim=False, dtype=None):
    return _reduce("mean", x, dims, keepdim)


def sum_(x, dims=None, keepdim=False, dtype=None):
    return _reduce("sum", x, dims, keepdim)


# ---- non-linear functions ------------------------------------------------------


def _unary(name: str) -> Callable:
    def run(x: Any, *args: Any) -> Any:
        return getattr(x, name)(*args) if is_secret(x) else getattr(torch, name)(x, *args)

    run.__name__ = name
    return run


def hardtanh(x, min_val=-1.0, max_val=1.0):
    if not is_secret(x):
        return torch.nn.functional.hardtanh(x, min_val, max_val)
    return x.hardtanh(min_val, max_val)


def gelu(x, approximate="none"):
    if not is_secret(x):
        return torch.nn.functional.gelu(x, approximate=approximate)
    # The tanh form of GELU for both variants: CrypTen's erf is a Taylor series that
    # diverges for |x| > 2, while its tanh stays bounded (error vs exact GELU < 1e-3).
    inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
    return x * (inner.tanh() + 1) * 0.5


def silu(x):
    return x * x.sigmoid() if is_secret(x) else torch.nn.functional.silu(x)


def softmax(x, dim, half_to_float=False):
    return x.softmax(dim) if is_secret(x) else torch.softmax(x, dim)


def log_softmax(x, dim, half_to_float=False):
    return x.log_softmax(dim) if is_secret(x) else torch.log_softmax(x, dim)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    if not is_secret(x):
        return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    centered = x - _reduce("mean", x, dims, True)
    var = _reduce("mean", centered * centered, dims, True)
    # CrypTen's default 3 Newton steps for 1/sqrt are accurate only for variances in
    # ~[0.1, 100]; 5 steps widen that to ~[0.01, 100] for a few more rounds.
    with crypten.cfg.temp_override({"functions.sqrt_nr_iters": max(5, crypten.cfg.functions.sqrt_nr_iters)}):
        out = centered * (var + eps).inv_sqrt()
    if weight is not None:
        out = mul(out, weight)
    return out if bias is None else add(out, bias)


def max_pool2d(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    if not is_secret(x):
        return torch.nn.functional.max_pool2d(x, kernel_size, stride or None, padding, dilation, ceil_mode)
    # CrypTen wants ints or tuples where the graph holds lists
    return x.max_pool2d(
        _tuple(kernel_size), padding=_tuple(padding), stride=_tuple(stride or kernel_size),
        dilation=_tuple(dilation), ceil_mode=ceil_mode,
    )


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _public_linear_pool(x: Any, pool: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    # Average pooling is a public linear map of each channel: build its matrix by
    # pooling the identity basis, then apply it with one local (communication-free)
    # matmul. Matches torch exactly for every padding/ceil/count_include_pad setting.
    n, c, *spatial = x.shape
    size = math.prod(spatial)
    basis = torch.eye(size).view(size, 1, *spatial)
    pooled = pool(basis)
    out_spatial = pooled.shape[2:]
    matrix = pooled.reshape(size, -1)
    out = matmul(x.reshape(n * c, size), matrix)
    return out.reshape(n, c, *out_spatial)


def avg_pool2d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    def pool(t):
        return torch.nn.functional.avg_pool2d(
            t, kernel_size, stride or None, padding, ceil_mode, count_include_pad, divisor_override
        )

    return pool(x) if not is_secret(x) else _public_linear_pool(x, pool)


def adaptive_avg_pool2d(x, output_size):
    def pool(t):
        return torch.nn.functional.adaptive_avg_pool2d(t, output_size)

    return pool(x) if not is_secret(x) else _public_linear_pool(x, pool)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = matmul(q, k.transpose(-2, -1)) * scale
    return matmul(softmax(scores, -1), v)


# ---- shape and data movement -----------------------------------------------------


def identity(x, *args, **kwargs):
    return x


def reshape(x, shape):
    return x.reshape(*shape) if is_secret(x) else x.reshape(shape)


def flatten(x, start_dim=0, end_dim=-1):
    start, end = start_dim % max(x.dim(), 1), end_dim % max(x.dim(), 1)
    shape = list(x.shape[:start]) + [-1] + list(x.shape[end + 1 :])
    return reshape(x, shape)


def unflatten(x, dim, sizes):
    dim = dim % x.dim()
    return reshape(x, list(x.shape[:dim]) + list(sizes) + list(x.shape[dim + 1 :]))


def permute(x, dims):
    return x.permute(*dims)


def transpose(x, dim0, dim1):
    return x.transpose(dim0, dim1)


def t(x):
    return x.t()


def unsqueeze(x, dim):
    return x.unsqueeze(dim)


def squeeze(x, dim=None):
    if dim is None:
        return x.squeeze()
    dims = [dim] if isinstance(dim, int) else list(dim)
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        if x.size(d) == 1:
            x = x.squeeze(d)
    return x


def select(x, dim, index):
    return x[_index(dim % x.dim(), index)]


def slice_(x, dim=0, start=None, end=None, step=1):
    return x[_index(dim % x.dim(), slice(start, end, step))]


def split(x, split_size, dim=0):
    return tuple(x.split(split_size, dim))


def chunk(x, chunks, dim=0):
    size = math.ceil(x.size(dim) / chunks)
    return split(x, size, dim)


def unbind(x, dim=0):
    return tuple(select(x, dim, i) for i in range(x.size(dim)))


def cat(tensors, dim=0):
    if not any(is_secret(v) for v in tensors):
        return torch.cat(tensors, dim)
    return crypten.cat([to_secret(v) for v in tensors], dim=dim)


def stack(tensors, dim=0):
    return cat([unsqueeze(v, dim) for v in tensors], dim)


def expand(x, size, implicit=False):
    return x.expand(*size)


def repeat(x, repeats):
    return x.repeat(*repeats)


def pad(x, pad_widths, mode="constant", value=None):
    value = 0.0 if value is None else value
    if not is_secret(x):
        return torch.nn.functional.pad(x, pad_widths, mode, value)
    return x.pad(pad_widths, mode=mode, value=value)


def clone(x, memory_format=None):
    return x.clone()


def dropout(x, p=0.5, train=False):
    return x


# Target -> implementation. The keys are the only operations a model may use.
OPS: dict[Any, Callable] = {
    aten.add.Tensor: add,
    aten.add.Scalar: add,
    aten.sub.Tensor: sub,
    aten.sub.Scalar: sub,
    aten.rsub.Scalar: rsub,
    aten.mul.Tensor: mul,
    aten.mul.Scalar: mul,
    aten.div.Tensor: div,
    aten.div.Scalar: div,
    aten.neg.default: operator.neg,
    aten.matmul.default: matmul,
    aten.mm.default: matmul,
    aten.bmm.default: matmul,
    aten.linear.default: linear,
    aten.conv1d.default: conv1d,
    aten.conv2d.default: conv2d,
    channel_affine: channel_affine,
    aten.mean.dim: mean,
    aten.mean.default: mean,
    aten.sum.dim_IntList: sum_,
    aten.sum.default: sum_,
    aten.relu.default: _unary("relu"),
    aten.sigmoid.default: _unary("sigmoid"),
    aten.tanh.default: _unary("tanh"),
    aten.hardtanh.default: hardtanh,
    aten.gelu.default: gelu,
    aten.silu.default: silu,
    aten.softmax.int: softmax,
    aten._softmax.default: softmax,
    aten.log_softmax.int: log_softmax,
    aten._log_softmax.default: log_softmax,
    aten.layer_norm.default: layer_norm,
    aten.max_pool2d.default: max_pool2d,
    aten.avg_pool2d.default: avg_pool2d,
    aten.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
    aten.scaled_dot_product_attention.default: scaled_dot_product_attention,
    aten.view.default: reshape,
    aten.reshape.default: reshape,
    aten._unsafe_view.default: reshape,
    aten.flatten.using_ints: flatten,
    aten.unflatten.int: unflatten,
    aten.permute.default: permute,
    aten.transpose.int: transpose,
    aten.t.default: t,
    aten.unsqueeze.default: unsqueeze,
    aten.squeeze.dim: squeeze,
    aten.squeeze.dims: squeeze,
    aten.squeeze.default: squeeze,
    aten.select.int: select,
    aten.slice.Tensor: slice_,
    aten.split.Tensor: split,
    aten.split_with_sizes.default: lambda x, sizes, dim=0: tuple(x.split(list(sizes), dim)),
    aten.chunk.default: chunk,
    aten.unbind.int: unbind,
    aten.cat.default: cat,
    aten.stack.default: stack,
    aten.expand.default: expand,
    aten.repeat.default: repeat,
    aten.pad.default: pad,
    aten.constant_pad_nd.default: lambda x, widths, value=0: pad(x, widths, "constant", value),
    aten.contiguous.default: identity,
    aten.alias.default: identity,
    aten.detach.default: identity,
    aten.lift_fresh_copy.default: identity,
    aten.clone.default: clone,
    aten.dropout.default: dropout,
    operator.getitem: operator.getitem,
}


def unsupported_reason(target: Any, args: tuple, kwargs: dict) -> str | None:
    """Why a call that is in OPS still cannot run on shares (None when it can)."""
    if target is aten.dropout.default and (args[2:3] or [kwargs.get("train", False)])[0]:
        return "dropout in training mode is not supported (call model.eval())"
    if target is aten.scaled_dot_product_attention.default:
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
        if mask is not None or causal:
            return "attention masks are not supported"
    if target is aten.pad.default:
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        if mode != "constant":
            return f"padding mode {mode!r} is not supported (only 'constant')"
    return None
