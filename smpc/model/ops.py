"""ATen operations executed on CrypTensors: the table the interpreter dispatches through.

Values are either CrypTensors (secret: weights, inputs and everything computed from
them) or plain torch tensors (public: constants that are part of the architecture).
Every function accepts both; an operation on public values alone runs in plain torch.
Only targets listed in OPS are executable; anything else is rejected at conversion.
"""

from __future__ import annotations

import math
import operator
from typing import Any
from collections.abc import Callable, Sequence

from smpc import compat, fixed_point  # noqa: F401  (compat first: it makes crypten importable on this torch)
import crypten
import torch

from smpc.protocols import approx, fixed, lookup

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


def _index(dim: int, key: Any) -> tuple[Any, ...]:
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
        return mul(a, approx.reciprocal(b))
    return a / b if not is_secret(a) else a.div(b)


def matmul(a: Any, b: Any) -> Any:
    if is_secret(a):
        return a.matmul(b)
    if is_secret(b):
        # public @ secret, written as (secret^T @ public^T)^T
        return b.transpose(-1, -2).matmul(a.transpose(-1, -2)).transpose(-1, -2)
    return torch.matmul(a, b)


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    if isinstance(weight, fixed.FixedWeight):  # x @ W^T against the session's mask of W
        out = fixed.product("matmul", x, weight, transposed=True) if is_secret(x) else linear(x, weight.tensor)
        return out if bias is None else add(out, bias)
    out = matmul(x, weight.t() if weight.dim() == 2 else weight)
    return out if bias is None else add(out, bias)


def _conv(
    dims: int,
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Any:
    if isinstance(weight, fixed.FixedWeight):
        if not is_secret(x):
            return _conv(dims, x, weight.tensor, bias, stride, padding, dilation, groups)
        out = fixed.product(
            f"conv{dims}d",
            x,
            weight,
            stride=_tuple(stride),
            padding=_tuple(padding),
            dilation=_tuple(dilation),
            groups=groups,
        )
        return out if bias is None else add(out, bias.view(1, -1, *([1] * dims)))
    if not is_secret(x) and not is_secret(weight):
        fn = torch.nn.functional.conv1d if dims == 1 else torch.nn.functional.conv2d
        return fn(x, weight, bias, stride, padding, dilation, groups)
    x = to_secret(x)
    fn = x.conv1d if dims == 1 else x.conv2d
    out = fn(weight, stride=_tuple(stride), padding=_tuple(padding), dilation=_tuple(dilation), groups=groups)
    if bias is None:
        return out
    return add(out, bias.view(1, -1, *([1] * dims)))


def conv1d(*args: Any) -> Any:
    return _conv(1, *args)


def conv2d(*args: Any) -> Any:
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


def mean(x: Any, dims: Sequence[int] | int | None = None, keepdim: bool = False, dtype: Any = None) -> Any:
    return _reduce("mean", x, dims, keepdim)


def sum_(x: Any, dims: Sequence[int] | int | None = None, keepdim: bool = False, dtype: Any = None) -> Any:
    return _reduce("sum", x, dims, keepdim)


# ---- non-linear functions ------------------------------------------------------


def _unary(name: str, secret_fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    # the approximation on shares, the torch function on public values
    def run(x: Any) -> Any:
        return secret_fn(x) if is_secret(x) else getattr(torch, name)(x)

    run.__name__ = name
    return run


def relu(x: Any) -> Any:
    return x.relu() if is_secret(x) else torch.relu(x)


def hardtanh(x: Any, min_val: float = -1.0, max_val: float = 1.0) -> Any:
    if not is_secret(x):
        return torch.nn.functional.hardtanh(x, min_val, max_val)
    return x.hardtanh(min_val, max_val)


def gelu(x: Any, approximate: str = "none") -> Any:
    if not is_secret(x):
        return torch.nn.functional.gelu(x, approximate=approximate)
    return approx.gelu(x, approximate)


def silu(x: Any) -> Any:
    return approx.silu(x) if is_secret(x) else torch.nn.functional.silu(x)


def softmax(x: Any, dim: int, half_to_float: bool = False) -> Any:
    return approx.softmax(x, dim) if is_secret(x) else torch.softmax(x, dim)


def log_softmax(x: Any, dim: int, half_to_float: bool = False) -> Any:
    return approx.log_softmax(x, dim) if is_secret(x) else torch.log_softmax(x, dim)


def layer_norm(
    x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5, cudnn_enable: bool = True
) -> Any:
    if not is_secret(x):
        return torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    if weight is not None and is_secret(weight):  # multiplied inside, in rounds it shares
        out = approx.normalize(x, dims, eps, center=True, weight=weight)
    else:
        out = approx.normalize(x, dims, eps, center=True)
        out = out if weight is None else mul(out, weight)
    return out if bias is None else add(out, bias)


def rms_norm(x: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Any:
    if not is_secret(x):
        return torch.nn.functional.rms_norm(x, normalized_shape, weight, eps)
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    if weight is not None and is_secret(weight):  # multiplied inside, in rounds it shares
        return approx.normalize(x, dims, eps, center=False, weight=weight)
    out = approx.normalize(x, dims, eps, center=False)
    return out if weight is None else mul(out, weight)


def pow_(x: Any, exponent: float) -> Any:
    if not is_secret(x):
        return torch.pow(x, exponent)
    if exponent == 0.5:
        return approx.sqrt(x)
    if exponent == -0.5:
        return approx.inv_sqrt(x)
    if exponent == -1:
        return approx.reciprocal(x)
    out = x
    for _ in range(int(exponent) - 1):  # small integer powers (unsupported_reason checks)
        out = out * x
    return out


def max_pool2d(
    x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False
) -> Any:
    if not is_secret(x):
        return torch.nn.functional.max_pool2d(x, kernel_size, stride or None, padding, dilation, ceil_mode)
    # CrypTen wants ints or tuples where the graph holds lists
    return x.max_pool2d(
        _tuple(kernel_size),
        padding=_tuple(padding),
        stride=_tuple(stride or kernel_size),
        dilation=_tuple(dilation),
        ceil_mode=ceil_mode,
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


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = (),
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Any = None,
) -> Any:
    def pool(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(
            t, kernel_size, stride or None, padding, ceil_mode, count_include_pad, divisor_override
        )

    return pool(x) if not is_secret(x) else _public_linear_pool(x, pool)


def adaptive_avg_pool2d(x: Any, output_size: Any) -> Any:
    def pool(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(t, output_size)

    return pool(x) if not is_secret(x) else _public_linear_pool(x, pool)


# Scores of masked positions: a finite value the ring holds (float32's lowest, which
# Hugging Face models add, is far outside it); the softmax's exp is exactly 0 below -16.
MASK_VALUE = -1.0e4


def scaled_dot_product_attention(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Any = None,
    enable_gqa: bool = False,
) -> Any:
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    if enable_gqa and k.size(-3) != q.size(-3):  # grouped-query attention: share each k/v head
        groups = q.size(-3) // k.size(-3)
        k = _repeat_heads(k, groups)
        v = _repeat_heads(v, groups)
    scores = matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        n, m = q.size(-2), k.size(-2)
        attn_mask = torch.ones(n, m, dtype=torch.bool).tril()
    if attn_mask is not None:
        if is_secret(attn_mask):  # an additive float mask built from a secret padding mask
            scores = add(scores, attn_mask)
        elif attn_mask.dtype == torch.bool:
            scores = add(scores, torch.where(attn_mask, 0.0, MASK_VALUE))
        else:
            scores = add(scores, attn_mask.clamp(min=MASK_VALUE))
    return matmul(softmax(scores, -1), v)


def _repeat_heads(x: Any, groups: int) -> Any:
    b, h, s, d = x.shape
    return x.unsqueeze(2).expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


# ---- shape and data movement -----------------------------------------------------


def identity(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def reshape(x: Any, shape: Sequence[int]) -> Any:
    return x.reshape(*shape) if is_secret(x) else x.reshape(shape)


def flatten(x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    start, end = start_dim % max(x.dim(), 1), end_dim % max(x.dim(), 1)
    shape = list(x.shape[:start]) + [-1] + list(x.shape[end + 1 :])
    return reshape(x, shape)


def unflatten(x: Any, dim: int, sizes: Sequence[int]) -> Any:
    dim = dim % x.dim()
    return reshape(x, list(x.shape[:dim]) + list(sizes) + list(x.shape[dim + 1 :]))


def permute(x: Any, dims: Sequence[int]) -> Any:
    return x.permute(*dims)


def transpose(x: Any, dim0: int, dim1: int) -> Any:
    return x.transpose(dim0, dim1)


def t(x: Any) -> Any:
    return x.t()


def unsqueeze(x: Any, dim: int) -> Any:
    return x.unsqueeze(dim)


def squeeze(x: Any, dim: int | Sequence[int] | None = None) -> Any:
    if dim is None:
        return x.squeeze()
    dims = [dim] if isinstance(dim, int) else list(dim)
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        if x.size(d) == 1:
            x = x.squeeze(d)
    return x


def select(x: Any, dim: int, index: int) -> Any:
    return x[_index(dim % x.dim(), index)]


def slice_(x: Any, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1) -> Any:
    return x[_index(dim % x.dim(), slice(start, end, step))]


def split(x: Any, split_size: int | Sequence[int], dim: int = 0) -> Any:
    return tuple(x.split(split_size, dim))


def chunk(x: Any, chunks: int, dim: int = 0) -> Any:
    size = math.ceil(x.size(dim) / chunks)
    return split(x, size, dim)


def unbind(x: Any, dim: int = 0) -> Any:
    return tuple(select(x, dim, i) for i in range(x.size(dim)))


def cat(tensors: list[Any], dim: int = 0) -> Any:
    if not any(is_secret(v) for v in tensors):
        return torch.cat(tensors, dim)
    return crypten.cat([to_secret(v) for v in tensors], dim=dim)


def stack(tensors: list[Any], dim: int = 0) -> Any:
    return cat([unsqueeze(v, dim) for v in tensors], dim)


def expand(x: Any, size: Sequence[int], implicit: bool = False) -> Any:
    return x.expand(*size)


def repeat(x: Any, repeats: Sequence[int]) -> Any:
    return x.repeat(*repeats)


def pad(x: Any, pad_widths: Any, mode: str = "constant", value: Any = None) -> Any:
    value = 0.0 if value is None else value
    if not is_secret(x):
        return torch.nn.functional.pad(x, pad_widths, mode, value)
    return x.pad(pad_widths, mode=mode, value=value)


def clone(x: Any, memory_format: Any = None) -> Any:
    return x.clone()


def dropout(x: Any, p: float = 0.5, train: bool = False) -> Any:
    return x


# ---- lookups, masks and selections -------------------------------------------------


def _as_float(v: Any) -> Any:
    # public booleans and integers take part in arithmetic as 0/1 (or integer) floats
    return v.float() if isinstance(v, torch.Tensor) and not v.is_floating_point() else v


def embedding(
    weight: Any, indices: Any, padding_idx: int = -1, scale_grad_by_freq: bool = False, sparse: bool = False
) -> Any:
    """A lookup: public indices select rows of the (secret) table; secret ids arrive as
    one-hot rows (program.InputSpec), and the lookup is their product with the table."""
    if isinstance(weight, fixed.FixedWeight):
        if is_secret(indices):  # onehot @ T against the session's mask of T
            return fixed.product("matmul", indices, weight)
        weight = weight.tensor
    if is_secret(indices) or indices.is_floating_point():
        return matmul(indices, weight)
    return weight[indices]


def ids_equal(onehot: Any, value: Any) -> Any:
    """eq(ids, value) on one-hot ids (program.InputSpec): the one-hot column of `value`."""
    width = onehot.shape[-1]
    if not (isinstance(value, int) and 0 <= value < width):
        return torch.zeros(tuple(onehot.shape[:-1]))
    return onehot[..., value]


def ids_differ(onehot: Any, value: Any) -> Any:
    """ne(ids, value) on one-hot ids: 1 minus the one-hot column of `value`."""
    return sub(1.0, ids_equal(onehot, value))


def lookup_secret_index(
    weight: Any, indices: Any, padding_idx: int = -1, scale_grad_by_freq: bool = False, sparse: bool = False
) -> Any:
    """An embedding lookup at a secret integer index computed on shares (RoBERTa's
    position ids): protocols.lookup's one-hot selection."""
    if not is_secret(indices):
        return embedding(weight, _as_index(indices))
    return lookup.rows(weight, indices)


def gather_secret_index(x: Any, dim: int, idx: Any, sparse_grad: bool = False) -> Any:
    """torch.gather at a secret integer index (protocols.lookup)."""
    if not is_secret(idx):
        return gather(x, dim, _as_index(idx))
    return lookup.gather(x, dim, idx)


def _as_index(values: torch.Tensor) -> torch.Tensor:
    # a public index that a plaintext run computed in floats (the ids arrive one-hot)
    return values.round().long() if values.is_floating_point() else values


def type_as(x: Any, other: Any) -> Any:
    # on shares a dtype is no change (see to_copy); a public value meeting a secret is a float
    if is_secret(x):
        return x
    return x.float() if is_secret(other) else x.type_as(other)


def to_copy(x: Any, dtype: Any = None, **kwargs: Any) -> Any:
    # on shares a dtype change is no change: float stays fixed point, and the only
    # integer or boolean secrets are 0/1 masks and one-hot ids (program.InputSpec)
    if is_secret(x):
        return x
    return x.to(dtype) if dtype is not None else x.clone()


def index(x: Any, indices: Any) -> Any:
    key = tuple(slice(None) if i is None else i for i in indices)
    return x[key]


def logical_and(a: Any, b: Any) -> Any:
    if not is_secret(a) and not is_secret(b):
        return torch.logical_and(a, b)
    return mul(_as_float(a), _as_float(b))


def logical_or(a: Any, b: Any) -> Any:
    if not is_secret(a) and not is_secret(b):
        return torch.logical_or(a, b)
    a, b = _as_float(a), _as_float(b)
    return sub(add(a, b), mul(a, b))


def logical_not(x: Any) -> Any:
    return torch.logical_not(x) if not is_secret(x) else -x + 1


def where(condition: Any, a: Any, b: Any) -> Any:
    """a where condition else b: b + condition * (a - b); a public 0/1 condition selects
    exactly (integer products, no truncation)."""
    if not any(is_secret(v) for v in (condition, a, b)):
        return torch.where(condition, a, b)
    if not is_secret(condition):
        keep = condition.bool()
        out = None
        for part, mask in ((a, keep), (b, ~keep)):
            if is_secret(part):
                term = fixed_point.times_integers(part, mask.long())  # broadcasts like torch
            else:
                term = torch.where(mask, torch.as_tensor(part, dtype=torch.float32), 0.0)
            out = term if out is None else add(out, term)
        return out
    a, b = _as_float(a), _as_float(b)
    return add(b, mul(condition, sub(a, b)))


def masked_fill(x: Any, mask: Any, value: Any) -> Any:
    return where(mask, torch.as_tensor(float(value)), x)


def _compare(name: str) -> Callable[[Any, Any], Any]:
    # comparisons on shares give 0/1 shares (CrypTen's binary circuits)
    def run(a: Any, b: Any) -> Any:
        if not is_secret(a) and not is_secret(b):
            return getattr(torch, name)(a, b)
        if is_secret(a):
            return fixed_point.to_fixed_point(getattr(a, name)(b))
        flipped = {"lt": "gt", "gt": "lt", "le": "ge", "ge": "le", "eq": "eq", "ne": "ne"}[name]
        return fixed_point.to_fixed_point(getattr(b, flipped)(a))

    run.__name__ = name
    return run


def gather(x: Any, dim: int, idx: Any, sparse_grad: bool = False) -> Any:
    return x.gather(dim, idx) if is_secret(x) else torch.gather(x, dim, idx)


def index_select(x: Any, dim: int, idx: Any) -> Any:
    return x.index_select(dim, idx) if is_secret(x) else torch.index_select(x, dim, idx)


def cumsum(x: Any, dim: int, dtype: Any = None) -> Any:
    return x.cumsum(dim) if is_secret(x) else torch.cumsum(x, dim)


def tril(x: Any, diagonal: int = 0) -> Any:
    if not is_secret(x):
        return torch.tril(x, diagonal)
    keep = torch.ones(x.shape[-2:], dtype=torch.long).tril(diagonal)
    return fixed_point.times_integers(x, keep)


def triu(x: Any, diagonal: int = 0) -> Any:
    if not is_secret(x):
        return torch.triu(x, diagonal)
    keep = torch.ones(x.shape[-2:], dtype=torch.long).triu(diagonal)
    return fixed_point.times_integers(x, keep)


def amax(x: Any, dim: int | list[int] | tuple[int, ...] = (), keepdim: bool = False) -> Any:
    if not is_secret(x):
        return torch.amax(x, dim, keepdim)
    dims = sorted((d % x.dim() for d in ([dim] if isinstance(dim, int) else (dim or range(x.dim())))), reverse=True)
    for d in dims:
        x = approx.max_values(x, d, keepdim)
    return x


def amin(x: Any, dim: int | list[int] | tuple[int, ...] = (), keepdim: bool = False) -> Any:
    return -amax(-x, dim, keepdim) if is_secret(x) else torch.amin(x, dim, keepdim)


def max_dim(x: Any, dim: int, keepdim: bool = False) -> Any:
    if not is_secret(x):
        return torch.max(x, dim, keepdim)
    values, onehot = x.max(dim=dim, keepdim=True)
    onehot = fixed_point.to_fixed_point(onehot)
    positions = torch.arange(x.size(dim), dtype=torch.float32).view(
        [-1 if d == dim % x.dim() else 1 for d in range(x.dim())]
    )
    indices = (onehot * positions).sum(dim, keepdim=True)
    if not keepdim:
        values, indices = values.squeeze(dim), indices.squeeze(dim)
    return values, indices


def argmax(x: Any, dim: int | None = None, keepdim: bool = False) -> Any:
    if not is_secret(x):
        return torch.argmax(x, dim, keepdim)
    if dim is None:
        return max_dim(x.reshape(-1), 0)[1]
    return max_dim(x, dim, keepdim)[1]


def abs_(x: Any) -> Any:
    return approx.split_sign(x)[2] if is_secret(x) else torch.abs(x)


def clamp(x: Any, min: Any = None, max: Any = None) -> Any:
    if not is_secret(x):
        return torch.clamp(x, min, max)
    if min is not None and max is not None:
        return x.hardtanh(min, max)
    if min is not None:
        return (x - min).relu() + min
    return -((-x + max).relu()) + max


def addmm(bias: Any, a: Any, b: Any, beta: float = 1, alpha: float = 1) -> Any:
    out = matmul(a, b)
    if alpha != 1:
        out = out * alpha
    return add(out, bias if beta == 1 else bias * beta)


def baddbmm(bias: Any, a: Any, b: Any, beta: float = 1, alpha: float = 1) -> Any:
    return addmm(bias, a, b, beta, alpha)


def log(x: Any) -> Any:
    return x.log() if is_secret(x) else torch.log(x)


def flip(x: Any, dims: Any) -> Any:
    return x.flip(dims) if is_secret(x) else torch.flip(x, dims)


def new_like(fill: float) -> Callable[..., torch.Tensor]:
    # tensors of a secret's shape but of public values (shape is public)
    def run(x: Any, size: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        shape = x.shape if size is None else size
        return torch.full(tuple(shape), fill)

    return run


# Target -> implementation. The keys are the only operations a model may use.
OPS: dict[Any, Callable[..., Any]] = {
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
    ids_equal: ids_equal,
    ids_differ: ids_differ,
    lookup_secret_index: lookup_secret_index,
    gather_secret_index: gather_secret_index,
    aten.type_as.default: type_as,
    aten.mean.dim: mean,
    aten.mean.default: mean,
    aten.sum.dim_IntList: sum_,
    aten.sum.default: sum_,
    aten.relu.default: relu,
    aten.sigmoid.default: _unary("sigmoid", approx.sigmoid),
    aten.tanh.default: _unary("tanh", approx.tanh),
    aten.exp.default: _unary("exp", approx.exp),
    aten.reciprocal.default: _unary("reciprocal", approx.reciprocal),
    aten.rsqrt.default: _unary("rsqrt", approx.inv_sqrt),
    aten.sqrt.default: _unary("sqrt", approx.sqrt),
    aten.pow.Tensor_Scalar: pow_,
    aten.rms_norm.default: rms_norm,
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
    aten.embedding.default: embedding,
    aten._to_copy.default: to_copy,
    aten.index.Tensor: index,
    aten.__and__.Tensor: logical_and,
    aten.bitwise_and.Tensor: logical_and,
    aten.logical_and.default: logical_and,
    aten.__or__.Tensor: logical_or,
    aten.bitwise_or.Tensor: logical_or,
    aten.logical_or.default: logical_or,
    aten.logical_not.default: logical_not,
    aten.bitwise_not.default: logical_not,
    aten.where.self: where,
    aten.where.ScalarOther: lambda c, a, b: where(c, a, torch.tensor(float(b))),
    aten.where.ScalarSelf: lambda c, a, b: where(c, torch.tensor(float(a)), b),
    aten.where.Scalar: lambda c, a, b: where(c, torch.tensor(float(a)), torch.tensor(float(b))),
    aten.masked_fill.Scalar: masked_fill,
    aten.lt.Scalar: _compare("lt"),
    aten.lt.Tensor: _compare("lt"),
    aten.le.Scalar: _compare("le"),
    aten.le.Tensor: _compare("le"),
    aten.gt.Scalar: _compare("gt"),
    aten.gt.Tensor: _compare("gt"),
    aten.ge.Scalar: _compare("ge"),
    aten.ge.Tensor: _compare("ge"),
    aten.eq.Scalar: _compare("eq"),
    aten.eq.Tensor: _compare("eq"),
    aten.ne.Scalar: _compare("ne"),
    aten.ne.Tensor: _compare("ne"),
    aten.gather.default: gather,
    aten.index_select.default: index_select,
    aten.cumsum.default: cumsum,
    aten.tril.default: tril,
    aten.triu.default: triu,
    aten.amax.default: amax,
    aten.amin.default: amin,
    aten.max.dim: max_dim,
    aten.argmax.default: argmax,
    aten.abs.default: abs_,
    aten.clamp.default: clamp,
    aten.addmm.default: addmm,
    aten.baddbmm.default: baddbmm,
    aten.log.default: log,
    aten.flip.default: flip,
    aten.new_ones.default: new_like(1.0),
    aten.new_zeros.default: new_like(0.0),
    aten.ones_like.default: new_like(1.0),
    aten.zeros_like.default: new_like(0.0),
    operator.getitem: operator.getitem,
}


def unsupported_reason(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why a call that is in OPS still cannot run on shares (None when it can)."""
    if target is aten.dropout.default and (args[2:3] or [kwargs.get("train", False)])[0]:
        return "dropout in training mode is not supported (call model.eval())"
    if target is aten.pow.Tensor_Scalar:
        exponent = args[1]
        if exponent not in (0.5, -0.5, -1) and not (float(exponent).is_integer() and 1 <= exponent <= 8):
            return f"exponent {exponent!r} is not supported (0.5, -0.5, -1 or an integer 1..8)"
    if target is aten.pad.default:
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        if mode != "constant":
            return f"padding mode {mode!r} is not supported (only 'constant')"
    return None
