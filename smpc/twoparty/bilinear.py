"""Every product CrypTen asks a triple for, in the forms the homomorphic layer computes.

A triple's cross terms op(A_0, B_1) and op(A_1, B_0) are bilinear. An elementwise product
is one product per output (`terms`: [1, S] operands, one per SIMD slot; smpc.twoparty.he).
A matrix product or a convolution is written as plain matrix products (`matrices`; a
convolution gathered by index as im2col does, since torch has no im2col for int64), which
smpc.twoparty.packing computes in Cheetah's coefficient packing. Shapes follow the
dealer's rules (smpc.dealer.material.product_size: torch's without its compiler stack).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from smpc.dealer.material import product_size
from smpc.errors import UnsupportedOpError


def terms(
    op: str, a: torch.Tensor, b: torch.Tensor, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    """For an elementwise product: (y [1, S] from a, x [1, S] from b, the output's shape)
    with op(a, b) = (y * x).sum(0).view(shape), int64 arithmetic wrapping as the ring's."""
    if op != "mul":
        raise UnsupportedOpError(f"{op} is not an elementwise product (matrix products go through `matrices`)")
    shape = product_size("mul", a.shape, b.shape, {})
    return a.expand(shape).reshape(1, -1), b.expand(shape).reshape(1, -1), shape


Assemble = Callable[[list[torch.Tensor]], torch.Tensor]


def matrices(
    op: str, a: torch.Tensor, b: torch.Tensor, kwargs: dict[str, Any]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Assemble]:
    """A matmul or convolution as plain matrix products: ([(A_i [n, k], B_i [k, m])],
    assemble), with op(a, b) = assemble([A_i @ B_i]). A shared right operand (a weight)
    makes one product of every row; a convolution is one per group (im2col)."""
    if op == "matmul":
        shape = product_size("matmul", a.shape, b.shape, {})
        a2 = a.unsqueeze(0) if a.dim() == 1 else a
        b2 = b.unsqueeze(-1) if b.dim() == 1 else b
        k, m = b2.shape[-2], b2.shape[-1]
        if b2.dim() == 2:  # one right operand for every row of a
            return [(a2.reshape(-1, k), b2)], lambda out: out[0].reshape(shape)
        leading = product_size("mul", a2.shape[:-2], b2.shape[:-2], {})
        n = a2.shape[-2]
        a3 = a2.expand(*leading, n, k).reshape(-1, n, k)
        b3 = b2.expand(*leading, k, m).reshape(-1, k, m)
        pairs = [(a3[i], b3[i]) for i in range(a3.shape[0])]
        return pairs, lambda out: torch.stack(out).reshape(shape)
    if op in ("conv1d", "conv2d"):
        columns, w, shape, groups = _im2col(op, a, b, kwargs)
        batch, out_channels = shape[0], shape[1]
        per_group = out_channels // groups
        per_term = w.shape[1] * w.shape[2] * w.shape[3]
        places = columns.shape[2]
        pairs = []
        for g in range(groups):
            rows = columns[:, g * per_term : (g + 1) * per_term, :]  # [batch, L, P]
            a_g = rows.permute(0, 2, 1).reshape(batch * places, per_term)
            b_g = w[g * per_group : (g + 1) * per_group].reshape(per_group, per_term).t()
            pairs.append((a_g, b_g))

        def assemble(out: list[torch.Tensor]) -> torch.Tensor:
            # each [batch P, Cout / groups] -> [batch, Cout, P] -> the output's shape
            joined = torch.cat([o.reshape(batch, places, per_group) for o in out], dim=2)
            return joined.permute(0, 2, 1).reshape(shape)

        return pairs, assemble
    raise UnsupportedOpError(f"{op} is not a matrix product")


def matrix_shapes(op: str, size0: torch.Size, size1: torch.Size, kwargs: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The (n, k, m) of `matrices`' products for operands of these sizes, computing nothing."""
    out = product_size(op, size0, size1, kwargs)
    if op == "matmul":
        k = size1[0] if len(size1) == 1 else size1[-2]
        m = 1 if len(size1) == 1 else size1[-1]
        if len(size1) <= 2:
            rows = 1
            for d in size0[:-1]:
                rows *= d
            return [(rows, k, m)]
        n = 1 if len(size0) == 1 else size0[-2]
        count = 1
        for d in out[: len(out) - (len(size0) > 1) - (len(size1) > 1)]:
            count *= d
        return [(n, k, m)] * count
    groups = kwargs.get("groups", 1)
    per_term = 1
    for d in size1[1:]:
        per_term *= d
    places = 1
    for d in out[2:]:
        places *= d
    return [(out[0] * places, per_term, out[1] // groups)] * groups


def sizes(op: str, size0: torch.Size, size1: torch.Size, kwargs: dict[str, Any]) -> tuple[int, int]:
    """(L, S) of `terms` for operands of these sizes, without computing them."""
    if op != "mul":
        raise UnsupportedOpError(f"{op} is not an elementwise product (matrix products go through `matrices`)")
    slots = 1
    for d in product_size("mul", size0, size1, {}):
        slots *= d
    return 1, slots


def _pair(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    if isinstance(value, (tuple, list)) and len(value) == dims and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise UnsupportedOpError(f"the two-party source takes integer convolution settings, got {value!r}")


def _im2col(
    op: str, a: torch.Tensor, w: torch.Tensor, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Size, int]:
    # (columns [batch, C * kh * kw, P], the weight as 2-D kernels, the output's shape, groups)
    unknown = set(kwargs) - {"stride", "padding", "dilation", "groups"}
    if unknown:
        raise UnsupportedOpError(f"the two-party source does not take {sorted(unknown)} in a convolution")
    dims = 1 if op == "conv1d" else 2
    stride, padding, dilation = (
        _pair(kwargs.get(k, d), dims) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1))
    )
    groups = kwargs.get("groups", 1)
    if dims == 1:  # a row of height 1
        a, w = a.unsqueeze(2), w.unsqueeze(2)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    batch, channels, height, width = a.shape
    out_channels, per_group, kh, kw = w.shape
    padded = torch.nn.functional.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    hp, wp = padded.shape[2], padded.shape[3]
    # im2col by index: each column's positions in the padded input (exact in float64)
    positions = torch.arange(channels * hp * wp, dtype=torch.float64).view(1, channels, hp, wp)
    index = torch.nn.functional.unfold(positions, (kh, kw), dilation=dilation, stride=stride).round().long()[0]
    columns = padded.reshape(batch, -1)[:, index]  # [batch, channels * kh * kw, P]
    out_h = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    shape = torch.Size((batch, out_channels, out_w) if dims == 1 else (batch, out_channels, out_h, out_w))
    return columns, w, shape, groups
