"""Products in Z/2^64 with a fixed operand (smpc.protocols.ring_matmul) give exactly
torch's int64 matmul in every form, on edge values as on random ones."""

from __future__ import annotations

import pytest
import torch

from smpc.protocols import ring_matmul
from smpc.protocols.csprng import AesCtrGenerator
from smpc.protocols.ring_matmul import FixedMatrix

TOP, BOTTOM = 2**63 - 1, -(2**63)
EDGES = torch.tensor(
    [
        0,
        1,
        -1,
        TOP,
        BOTTOM,
        2**16 - 1,
        2**16,
        -(2**16),
        2**48 + 2**32 - 1,
        0xFFFF_0000_FFFF_0000 - 2**64,
        127,
        128,
        -129,
    ]
)
# the forms this CPU can run: int8 digits only where its int8 GEMMs are exact
FORMS = [name for name in ring_matmul.FORMS if name != "digits" or ring_matmul.int8_exact()]
needs_int8 = pytest.mark.skipif(not ring_matmul.int8_exact(), reason="this CPU's int8 GEMMs are not exact")


def ring(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return AesCtrGenerator(seed.to_bytes(32, "little")).ring(shape)


def edge_matrix(rows: int, cols: int, offset: int = 0) -> torch.Tensor:
    return EDGES[(torch.arange(rows * cols) + offset) % len(EDGES)].view(rows, cols)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "x_shape, w_shape", [((3, 5), (5, 7)), ((2, 4, 6), (6, 3)), ((1, 300), (300, 2)), ((5,), (5, 2))]
)
def test_every_form_equals_int64_matmul_on_random_ring_elements(form, x_shape, w_shape):
    x, w = ring(x_shape, 1), ring(w_shape, 2)
    fixed = FixedMatrix(w, form)
    assert fixed.form == form
    assert torch.equal(fixed.rmatmul(x), torch.matmul(x, w))
    assert torch.equal(fixed.rmatmul(x), torch.matmul(x, w))  # W's form is kept and reused


@pytest.mark.parametrize("form", FORMS)
def test_every_form_equals_int64_matmul_on_edge_values(form):
    # every pairing of 0, +-1, the ring's extremes and values straddling digit and limb boundaries
    x = edge_matrix(len(EDGES), len(EDGES))
    w = edge_matrix(len(EDGES), len(EDGES), offset=3).t().contiguous()
    assert torch.equal(FixedMatrix(w, form).rmatmul(x), torch.matmul(x, w))
    # all-extreme rows summed over many terms: the int32 sums (a whole piece of terms) and
    # the float64 sums at their largest
    many = ring_matmul.PIECE if form == "digits" else 4096
    for a, b in ((TOP, BOTTOM), (BOTTOM, BOTTOM), (-1, -1), (TOP, TOP)):
        left, right = torch.full((2, many), a), torch.full((many, 3), b)
        assert torch.equal(FixedMatrix(right, form).rmatmul(left), torch.matmul(left, right))


@needs_int8
def test_sums_longer_than_a_piece_are_cut_exactly(monkeypatch):
    # K past PIECE terms runs in pieces, each an exact int32 sum, added in int64
    monkeypatch.setattr(ring_matmul, "PIECE", 4)
    x, w = ring((3, 11), 5), ring((11, 2), 6)
    x[0], w[:, 0] = BOTTOM, BOTTOM
    assert torch.equal(FixedMatrix(w, "digits").rmatmul(x), torch.matmul(x, w))


def test_signed_bytes_recompose_to_the_value():
    parts = ring_matmul.signed_bytes(EDGES)
    assert parts.dtype == torch.int8 and parts.shape == (8, len(EDGES))
    recomposed = sum((parts[i].to(torch.int64) + 128) << (8 * i) for i in range(ring_matmul.DIGITS))
    assert torch.equal(recomposed, EDGES)
    # read from the int64's bytes: the same for a transposed view and a column
    for value in (ring((5, 7), 8).t(), EDGES.reshape(-1, 1)):
        parts = ring_matmul.signed_bytes(value)
        assert parts.is_contiguous() and parts.shape == (8, *value.shape)
        shifted = torch.stack([((value >> (8 * i)) & 0xFF) - 128 for i in range(8)])
        assert torch.equal(parts.to(torch.int64), shifted)


@needs_int8
def test_int8_products_read_one_row_views_right():
    # torch._int_mm reads a one-row view of stride 1 ([K, 1].t()) wrongly: gemm copies such views
    a = torch.randint(-128, 128, (3, 40), dtype=torch.int8)
    ones = torch.ones(40, 1, dtype=torch.int8)
    for left, right in ((a, ones), (ones.t(), a.t()), (a.t().contiguous().t(), ones)):
        assert torch.equal(ring_matmul.gemm(left, right).to(torch.int64), torch.matmul(left.long(), right.long()))


def test_limbs_recompose_to_the_value():
    parts = ring_matmul.limbs(EDGES)
    recomposed = sum(parts[i].to(torch.int64) << (16 * i) for i in range(ring_matmul.LIMBS))
    assert torch.equal(recomposed, EDGES)
    for value in (ring((5, 7), 8).t(), EDGES[3], EDGES.reshape(-1, 1)):
        for dtype in (torch.float64, torch.uint16):
            parts = ring_matmul.limbs(value, dtype)
            assert parts.dtype == dtype and parts.is_contiguous() and parts.shape == (4, *value.shape)
            shifted = torch.stack([(value >> (16 * i)) & 0xFFFF for i in range(4)])
            assert torch.equal(parts.to(torch.int64), shifted)


def test_past_the_exact_float64_range_limbs_give_way_to_int64(monkeypatch):
    monkeypatch.setattr(ring_matmul, "EXACT_TERMS", 4)
    x, w = ring((2, 9), 3), ring((9, 2), 4)
    fixed = FixedMatrix(w, "limbs")
    assert fixed.form == "int64" and torch.equal(fixed.rmatmul(x), torch.matmul(x, w))


def test_the_process_uses_its_fastest_exact_form(monkeypatch):
    # measured once per process: one of the forms this CPU runs exactly, and the default
    assert ring_matmul.fastest_form() in FORMS
    assert FixedMatrix(ring((4, 3), 9)).form == ring_matmul.fastest_form()
    # where int8 GEMMs are not exact, the probe never picks digits, and nobody may ask for them
    ring_matmul.fastest_form.cache_clear()
    monkeypatch.setattr(ring_matmul, "int8_exact", lambda: False)
    try:
        assert ring_matmul.fastest_form() in ("int64", "limbs")
        with pytest.raises(ValueError, match="not exact"):
            FixedMatrix(ring((4, 3), 9), "digits")
    finally:
        ring_matmul.fastest_form.cache_clear()
