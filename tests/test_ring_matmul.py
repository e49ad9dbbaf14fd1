"""Products in Z/2^64 through float64 limbs (smpc.protocols.ring_matmul) give exactly
torch's int64 matmul, on edge values as on random ones."""

from __future__ import annotations

import pytest
import torch

from smpc.protocols import ring_matmul
from smpc.protocols.csprng import AesCtrGenerator
from smpc.protocols.ring_matmul import FixedMatrix

TOP, BOTTOM = 2**63 - 1, -(2**63)
EDGES = torch.tensor(
    [0, 1, -1, TOP, BOTTOM, 2**16 - 1, 2**16, -(2**16), 2**48 + 2**32 - 1, 0xFFFF_0000_FFFF_0000 - 2**64]
)


def ring(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return AesCtrGenerator(seed.to_bytes(32, "little")).ring(shape)


def edge_matrix(rows: int, cols: int, offset: int = 0) -> torch.Tensor:
    return EDGES[(torch.arange(rows * cols) + offset) % len(EDGES)].view(rows, cols)


@pytest.mark.parametrize("x_shape, w_shape", [((3, 5), (5, 7)), ((2, 4, 6), (6, 3)), ((1, 300), (300, 2))])
def test_limb_products_equal_int64_matmul_on_random_ring_elements(x_shape, w_shape):
    x, w = ring(x_shape, 1), ring(w_shape, 2)
    assert torch.equal(FixedMatrix(w).rmatmul(x), torch.matmul(x, w))


def test_limb_products_equal_int64_matmul_on_edge_values():
    # every pairing of 0, +-1, the ring's extremes and values straddling limb boundaries
    x = edge_matrix(len(EDGES), len(EDGES))
    w = edge_matrix(len(EDGES), len(EDGES), offset=3).t().contiguous()
    fixed = FixedMatrix(w)
    assert torch.equal(fixed.rmatmul(x), torch.matmul(x, w))
    # all-extreme rows summed over many terms: the float64 sums are at their largest
    many = 4096
    top, bottom = torch.full((2, many), TOP), torch.full((many, 3), BOTTOM)
    assert torch.equal(FixedMatrix(bottom).rmatmul(top), torch.matmul(top, bottom))
    ones = torch.full((1, many), -1)
    assert torch.equal(FixedMatrix(torch.full((many, 1), -1)).rmatmul(ones), torch.tensor([[many]]))
    # the limbs are kept and reused: a second product gives the same
    assert torch.equal(fixed.rmatmul(x), torch.matmul(x, w))


def test_limbs_recompose_to_the_value():
    parts = ring_matmul.limbs(EDGES)
    recomposed = sum(parts[i].to(torch.int64) << (16 * i) for i in range(ring_matmul.LIMBS))
    assert torch.equal(recomposed, EDGES)
    assert float(parts.max()) <= 2**16 - 1 and float(parts.min()) >= 0
    # read from the int64's words: the same for a transposed view, a scalar, and as uint16
    for value in (ring((5, 7), 8).t(), EDGES[3], EDGES.reshape(-1, 1)):
        for dtype in (torch.float64, torch.uint16):
            parts = ring_matmul.limbs(value, dtype)
            assert parts.dtype == dtype and parts.is_contiguous() and parts.shape == (4, *value.shape)
            shifted = torch.stack([(value >> (16 * i)) & 0xFFFF for i in range(4)])
            assert torch.equal(parts.to(torch.int64), shifted)


def test_past_the_exact_float64_range_it_is_int64_matmul(monkeypatch):
    # sums of more terms than float64 holds exactly fall back to torch's int64 matmul
    monkeypatch.setattr(ring_matmul, "EXACT_TERMS", 4)
    x, w = ring((2, 9), 3), ring((9, 2), 4)
    fixed = FixedMatrix(w)
    assert torch.equal(fixed.rmatmul(x), torch.matmul(x, w)) and fixed._limbs is None
