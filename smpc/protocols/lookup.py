"""Lookups at a secret index: a table row (or a gathered element) chosen by a secret integer.

Ids that the data owner holds arrive one-hot already (smpc.model.program.InputSpec); an index
computed on shares does not, e.g. RoBERTa's position ids, which count the non-padding
tokens of the secret input_ids. Its one-hot row comes from one batched comparison
against the n - 1 midpoints k - 1/2 between the possible values: the step bits
s_k = [x >= k - 1/2] give onehot_k = s_k - s_(k+1), the selection used by oblivious
array access in linear scans (Keller and Scholl, "Efficient, Oblivious Data Structures
for MPC", ASIACRYPT 2014, section 3: the linear-scan baseline; it costs n - 1
comparisons per index, in the rounds of one). The midpoints make the selection exact
for an index that carries a fixed-point rounding error below one half. The one-hot bits
are 0/1 at scale 1, so the product with a secret table is exact (no truncation); a
public table is multiplied at the fixed-point scale (CrypTen would otherwise encode it at
the bits' scale of 1, rounding it to integers), one truncation.
"""

from __future__ import annotations

from typing import Any

from smpc import compat, fixed_point  # noqa: F401  (compat first: it makes crypten importable on this torch)
import crypten

from smpc.protocols.approx import less_than


def one_hot(x: Any, n: int) -> Any:
    """One-hot rows (a new last axis of width `n`) of a secret integer tensor `x` with
    values in 0..n-1; an index outside that range selects row 0 (below) or row n-1
    (above), as a clamp would."""
    if n == 1:
        return x.unsqueeze(-1) * 0 + 1
    above = 1 - less_than(x, [k - 0.5 for k in range(1, n)])  # [x >= k - 1/2], k = 1..n-1
    first = 1 - above[..., :1]
    middle = above[..., :-1] - above[..., 1:]
    return crypten.cat([first, middle, above[..., -1:]], dim=-1)


def rows(table: Any, index: Any) -> Any:
    """table[index] for a secret integer `index` (any shape) and a table of n rows
    (secret or public): the one-hot of the index times the table."""
    return _bits_for(one_hot(index, int(table.shape[0])), table).matmul(table)


def gather(source: Any, dim: int, index: Any) -> Any:
    """torch.gather(source, dim, index) for a secret integer `index`: each output element
    is sum_k onehot(index)_k * source[..., k, ...] along `dim`."""
    dim = dim % source.dim()
    n = int(source.shape[dim])
    cut = source  # gather reads only the index's extent on every other axis
    for axis, size in enumerate(index.shape):
        if axis != dim and cut.shape[axis] != size:
            cut = cut.narrow(axis, 0, size)
    # `dim` moved last, with a broadcast axis in its place: (..., 1, ..., n)
    order = [a for a in range(cut.dim()) if a != dim] + [dim]
    moved = cut.permute(*order).unsqueeze(dim)
    return (_bits_for(one_hot(index, n), moved) * moved).sum(-1)


def _bits_for(bits: Any, other: Any) -> Any:
    # bits at scale 1 multiply a secret exactly; a public operand needs the full scale
    return bits if isinstance(other, crypten.CrypTensor) else fixed_point.to_fixed_point(bits)
