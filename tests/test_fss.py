"""FSS from the dealer: the DCF and every gate on edge values, not only random ones.

The two parties' local halves are run here in one process on keys made exactly as the
dealer makes them (smpc.protocols.fss.dealer_material) from the streams each party
would draw; the opening is the sum of the two masked shares. Whole runs over real
processes are in test_fss_runs.py.
"""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch

from smpc.protocols import dcf, fss
from smpc.protocols.csprng import AesCtrGenerator

TOP = 2**63 - 1
BOTTOM = -(2**63)
UNIT = 2**16  # one at 16 fractional bits
# 0, one unit of the last place, the largest and smallest ring values, the values
# next to the wrap-around, the largest encodable values at 16 bits, and fixed-point 1
EDGES = torch.tensor(
    [
        0,
        1,
        -1,
        2,
        -2,
        TOP,
        BOTTOM,
        TOP - 1,
        BOTTOM + 1,
        2**62,
        -(2**62),
        2**62 - 1,
        -(2**62) + 1,
        2**47,
        -(2**47),
        UNIT,
        -UNIT,
        UNIT + 1,
        -UNIT - 1,
    ],
    dtype=torch.long,
)


def _random(n: int) -> torch.Tensor:
    return AesCtrGenerator().ring((n,))


def _dcf_sum(alpha, beta, x, bits):
    roots = (_random(2 * len(alpha)).view(-1, 2), _random(2 * len(alpha)).view(-1, 2))
    keys = dcf.gen(alpha, beta, roots, bits)
    return dcf.eval_(0, roots[0], keys, x) + dcf.eval_(1, roots[1], keys, x)


@pytest.mark.parametrize("bits", [1, 2, 7, 63])
@pytest.mark.parametrize("k", [1, 2])
def test_dcf_is_beta_below_alpha_and_zero_elsewhere(bits, k):
    top = (1 << bits) - 1
    alpha = torch.cat([torch.tensor([0, 1, top, top - 1, 1 << (bits - 1)]) & top, _random(300) & top])
    n = len(alpha)
    beta = torch.cat(
        [torch.tensor([[1] * k, [TOP] * k, [BOTTOM] * k, [-1] * k, [0] * k]), _random(300 * k).view(-1, k)]
    )
    for x in (alpha, alpha - 1, alpha + 1, torch.zeros(n, dtype=torch.long), torch.full((n,), top), _random(n)):
        x = x & top
        expected = torch.where((x < alpha).view(n, 1), beta, torch.zeros_like(beta))
        assert torch.equal(_dcf_sum(alpha, beta, x, bits), expected)


def test_dcf_keys_pack_and_refuse_the_wrong_length():
    alpha, beta = _random(5) & 0xFF, _random(5).view(5, 1)
    roots = (_random(10).view(5, 2), _random(10).view(5, 2))
    keys = dcf.gen(alpha, beta, roots, 8)
    flat = keys.pack()
    assert flat.numel() == dcf.DcfKeys.size(5, 8, 1)
    again = dcf.DcfKeys.unpack(flat, 5, 8, 1)
    assert torch.equal(dcf.eval_(0, roots[0], again, alpha), dcf.eval_(0, roots[0], keys, alpha))
    with pytest.raises(ValueError, match="expected 135 int64 words of DCF keys, got 134 "):
        dcf.DcfKeys.unpack(flat[:-1], 5, 8, 1)


def test_correction_words_look_uniform_whatever_the_threshold():
    # a key alone says nothing of alpha: its seed corrections are as balanced for a
    # threshold of 0 as for 2^62
    roots = (_random(4000).view(-1, 2), _random(4000).view(-1, 2))
    beta = torch.ones(2000, 1, dtype=torch.long)
    for alpha in (torch.zeros(2000, dtype=torch.long), torch.full((2000,), 2**62)):
        words = dcf.gen(alpha, beta, roots, 63).s_cw
        assert 0.48 < np.unpackbits(words.numpy().view(np.uint8)).mean() < 0.52


def _gate(kind: str, x: torch.Tensor, divisor: int | torch.Tensor | None = None, bits: int = 64) -> torch.Tensor:
    # the dealer's material, each party's key from its own stream, one opening, both halves
    seeds = [secrets.token_bytes(32) for _ in range(2)]
    if kind == "trunc":
        args = (torch.Size(x.shape),) + ((fss.divisor_arg(divisor),) if divisor is not None else ())
    else:
        args = fss.comparison_args(torch.Size(x.shape), bits)
    items = fss.dealer_material(kind, [AesCtrGenerator(s) for s in seeds], args)
    keys = [fss.party_key(kind, AesCtrGenerator(s), rank, args, items.get(rank)) for rank, s in enumerate(seeds)]
    share0 = _random(x.numel())
    shares = [share0, x - share0]
    if kind == "trunc":
        d = fss.divisors(args)
        opened = shares[0] + keys[0].mask + fss.trunc_offset(d) + shares[1] + keys[1].mask
        return sum(fss.trunc_local(rank, opened, keys[rank], d) for rank in range(2))
    opened = sum(s + k.mask for s, k in zip(shares, keys))
    local = fss.ltz_local if kind == "ltz" else fss.relu_local
    return sum(local(rank, opened, keys[rank]) for rank in range(2))


def test_sign_bit_is_exact_on_every_edge_of_the_ring():
    x = torch.cat([EDGES, _random(4000)])
    assert torch.equal(_gate("ltz", x), (x < 0).long())


def test_relu_is_exact_on_every_edge_of_the_ring():
    x = torch.cat([EDGES, _random(4000)])
    assert torch.equal(_gate("relu", x), torch.relu(x))


def test_one_divisor_as_an_int_gives_what_divisors_as_a_tensor_give():
    # a truncation by one public divisor computes its constants once, in Python: the same
    # shares as the per-element form, on the divisors' edges (1, powers of two, the largest)
    x = torch.cat([EDGES, _random(1000)])
    for d in (1, 2, 3, 2**16, 370_728, 2**30, fss.MAX_DIVISOR - 1):
        tensor = torch.full((x.numel(),), d, dtype=torch.int64)
        assert fss.trunc_offset(d) == int(fss.trunc_offset(tensor)[0])
        opened = x + fss.trunc_offset(d)
        key = fss.GateKey(torch.zeros_like(x), None, None, (_random(x.numel()), _random(x.numel())))
        for rank in range(2):
            assert torch.equal(fss.trunc_local(rank, opened, key, d), fss.trunc_local(rank, opened, key, tensor))


def _within(bits: int, n: int) -> torch.Tensor:
    # the edges of a `bits`-wide two's complement range, and random values inside it
    top, bottom = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    edges = torch.tensor([0, 1, -1, top, bottom, top - 1, bottom + 1, top // 2, bottom // 2], dtype=torch.long)
    inside = (_random(n) >> (64 - bits)) if bits < 64 else _random(n)
    return torch.cat([edges.clamp(bottom, top), inside])


@pytest.mark.parametrize("bits", [2, 3, 8, 17, 24, 33, 41, 63, 64])
def test_narrow_comparisons_are_exact_on_every_edge_of_their_width(bits):
    x = _within(bits, 3000)
    assert torch.equal(_gate("ltz", x, bits=bits), (x < 0).long())
    assert torch.equal(_gate("relu", x, bits=bits), torch.relu(x))


def test_narrow_keys_shrink_with_the_width_and_bad_widths_are_refused():
    shape = torch.Size((1000,))
    sizes = {bits: fss.item_size("ltz", 1, fss.comparison_args(shape, bits)) * 8 / 1000 for bits in (16, 24, 32, 64)}
    assert sizes[64] == 8 * (3 * 63 + 3) and sizes[24] == 8 * (3 * 23 + 3)  # bytes per comparison
    assert sizes[16] < sizes[24] < sizes[32] < sizes[64]
    assert fss.comparison_args(shape, 64) == (shape,)  # the full width names no width
    for bad in (1, 65):
        with pytest.raises(ValueError, match="comparison width of 2..64 bits"):
            fss.comparison_args(shape, bad)


def test_a_value_outside_the_width_gives_a_wrong_bit():
    # why widths come only from calibrations with headroom and range checks
    x = torch.tensor([2**23, -(2**23) - 1], dtype=torch.long)
    assert torch.equal(_gate("ltz", x, bits=24), torch.tensor([1, 0]))


@pytest.mark.parametrize("divisor", [1, 2, 3, 7, 2**16, 2**16 + 1, 1000003, 2**30])
def test_truncation_is_within_one_unit_and_never_wraps(divisor):
    # every value CrypTen's two-party truncation can meet: |x| < 2^62 - d
    bound = 2**62 - divisor
    x = torch.cat([EDGES.clamp(-bound, bound - 1), _random(6000) >> 2]).clamp(-bound, bound - 1)
    error = _gate("trunc", x, divisor) - torch.div(x, divisor, rounding_mode="floor")
    assert error.abs().max() <= 1
    if divisor & (divisor - 1) == 0:  # a power of two: floor or one more (stochastic rounding)
        assert error.min() >= 0


def test_truncation_by_a_different_divisor_per_element():
    d = torch.tensor([1, 2, 3, 2**16, 7, 2**30], dtype=torch.long)
    x = torch.cat([EDGES[:6].clamp(-(2**61), 2**61), _random(6) >> 3]).view(2, 6)
    error = _gate("trunc", x.reshape(-1), d.expand(2, 6).reshape(-1)) - torch.div(x, d, rounding_mode="floor").reshape(
        -1
    )
    assert error.abs().max() <= 1


def test_truncation_rounds_stochastically():
    # 0.25 units above an integer: one in four results round up, on average
    x = torch.full((20000,), 5 * UNIT + UNIT // 4, dtype=torch.long)
    got = _gate("trunc", x, UNIT)
    assert set(got.unique().tolist()) <= {5, 6}
    assert 0.22 < float((got == 6).float().mean()) < 0.28


def test_a_key_of_the_wrong_size_is_refused_by_name():
    seeds = [secrets.token_bytes(32) for _ in range(2)]
    args = (torch.Size((4,)),)
    items = fss.dealer_material("relu", [AesCtrGenerator(s) for s in seeds], args)
    with pytest.raises(ValueError, match=r"expected \d+ int64 words for a relu key of 4 elements, got \d+"):
        fss.party_key("relu", AesCtrGenerator(seeds[1]), 1, args, items[1][:-8])


def test_unsigned_division_of_every_64_bit_pattern():
    x = torch.cat([EDGES, _random(2000)])
    # powers of two take a shift, the others a split division; as ints and as tensors
    for d in (1, 2, 3, 2**15, 2**16, 2**20, 2**30, 2**31 - 1):
        expected = [((int(v) % 2**64) // d) for v in x]
        for divisor in (d, torch.full_like(x, d)):
            got = [int(v) % 2**64 for v in fss.udiv(x, divisor)]
            assert got == expected, d
