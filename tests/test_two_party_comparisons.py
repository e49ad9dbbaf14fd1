"""The millionaires' comparison of two parties alone (comparisons: ot): its material made
by OT between two real party processes, then [x < 0] on edge values and on shares that
straddle every digit boundary (smpc.protocols.millionaires)."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch

from harness import run_parties
from smpc.protocols import millionaires

RING = 1 << 64
TOP = 1 << 63
EDGES = [0, 1, -1, 2, -2, 1 << 62, -(1 << 62), TOP - 1, -TOP, 15, 16, -16, -17, 1 << 60, (1 << 60) - 1]


def _signed(v: int) -> int:
    v %= RING
    return v - RING if v >= TOP else v


def _cases() -> tuple[list[int], list[int]]:
    """(x, party 0's share): every edge value with every edge share, and shares whose low
    63 bits sum to exactly 2^63 - 1 or 2^63 (the carry's edge, where every digit is
    equal until the last)."""
    xs, r0 = [], []
    for x in EDGES:
        for r in EDGES + [int.from_bytes(secrets.token_bytes(8), "little") for _ in range(3)]:
            xs.append(_signed(x))
            r0.append(_signed(r))
    for _ in range(20):
        low0 = int.from_bytes(secrets.token_bytes(8), "little") % TOP
        for total in (TOP - 1, TOP, TOP + 1):  # low0 + low1 = total: carry 0, 1, 1
            low1 = (total - low0) % TOP
            for high0, high1 in ((0, 0), (1, 0), (1, 1)):
                share0, share1 = low0 + high0 * TOP, low1 + high1 * TOP
                xs.append(_signed(share0 + share1))
                r0.append(_signed(share0))
    return xs, r0


def _compare(rank: int, world_size: int, share0: list[int], share1: list[int]) -> dict:
    from smpc.twoparty.link import Link
    from smpc.twoparty.triples import OtCorrelations

    ot = OtCorrelations(Link())
    ot.setup()
    share = torch.tensor(share0 if rank == 0 else share1, dtype=torch.int64)
    before = ot.link.bytes_sent
    items = ot.comparisons(share.numel())
    offline = ot.link.bytes_sent - before
    received: list[np.ndarray] = []

    def exchange(ours: np.ndarray) -> np.ndarray:
        theirs = millionaires._exchange(ours)
        received.append(theirs)
        return theirs

    carry = millionaires.carry_share(rank, share, items, exchange)
    equal = millionaires.equal_share(rank, share, ot.comparisons(share.numel()), millionaires._exchange)
    return {
        "carry": torch.from_numpy(carry.astype(np.int64)),
        "equal": torch.from_numpy(equal.astype(np.int64)),
        "items": items,
        "offline": offline,
        "received": [torch.from_numpy(r) for r in received],
    }


@pytest.fixture(scope="module")
def compared() -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    xs, r0 = _cases()
    share0 = torch.tensor(r0, dtype=torch.int64)
    share1 = torch.tensor(xs, dtype=torch.int64) - share0  # wraps mod 2^64 as the ring does
    return share0, share1, run_parties(_compare, 2, share0.tolist(), share1.tolist(), timeout=300)


def test_the_carry_and_the_sign_are_right_on_edge_values_and_digit_boundaries(compared):
    share0, share1, (p0, p1) = compared
    low0, low1 = share0 & (TOP - 1), share1 & (TOP - 1)
    # the carry into bit 63: low0 + low1 >= 2^63, i.e. low1 > 2^63 - 1 - low0 (no overflow)
    want = (low1 > (TOP - 1) - low0).long()
    assert torch.equal(p0["carry"] ^ p1["carry"], want)
    sign = ((share0 >> 63) & 1) ^ p0["carry"] ^ ((share1 >> 63) & 1) ^ p1["carry"]
    assert torch.equal(sign, ((share0 + share1) < 0).long())
    assert want.sum() > 50 and (1 - want).sum() > 50  # both outcomes on the edges


def test_equality_is_right_on_edge_values(compared):
    share0, share1, (p0, p1) = compared
    want = ((share0 + share1) == 0).long()
    assert torch.equal(p0["equal"] ^ p1["equal"], want)
    assert want.sum() >= 15  # x = 0 with every edge share; and its neighbours, equal in all digits but one
    near = torch.tensor([1, -1, 16, -16, 1 << 60, -(1 << 63)], dtype=torch.int64)
    assert not (p0["equal"] ^ p1["equal"])[torch.isin(share0 + share1, near)].any()


def test_each_chosen_pad_is_the_senders_pad_at_the_choice(compared):
    _, _, (p0, p1) = compared
    for chooser, sender in ((p0, p1), (p1, p0)):
        pads, choices, chosen = sender["items"][0], chooser["items"][1], chooser["items"][2]
        assert torch.equal(chosen, (pads >> (2 * choices)) & 3)
        # the other 15 pads are not tied to the chosen one: each of the 4 values about a quarter
        others = torch.stack([(pads >> (2 * i)) & 3 for i in range(16)], dim=2)
        counts = torch.bincount(others.reshape(-1), minlength=4).double()
        assert ((counts / counts.sum()) - 0.25).abs().max() < 0.02


def test_the_bit_triples_multiply(compared):
    _, _, (p0, p1) = compared
    a, b, c = (p0["items"][k] ^ p1["items"][k] for k in (4, 5, 6))
    assert torch.equal(a & b, c)


def test_a_comparison_costs_a_kilobyte_offline_and_under_fifty_bytes_online(compared):
    share0, _, (p0, p1) = compared
    n = share0.numel()
    for party in (p0, p1):
        # one 128-bit column entry per random OT; the triples round up to whole words
        assert party["offline"] == 16 * (n * millionaires.ROTS + 64 * -(-n * millionaires.ANDS // 64))
        online = sum(r.numel() for r in party["received"])
        assert len(party["received"]) == 6  # offsets, tables, then one opening a tree level
        assert online <= n * (4 + 32 + 8) + 6 * 8


def test_what_a_party_receives_online_is_uniform_whatever_the_inputs():
    # all-zero shares on both sides: the offsets u ^ c and the tables are still uniform
    n = 4096
    zeros = [0] * n
    p0, p1 = run_parties(_compare, 2, zeros, zeros, timeout=300)
    for party in (p0, p1):
        offsets = party["received"][0].numpy()
        nibbles = np.concatenate([offsets & 15, offsets >> 4])
        counts = np.bincount(nibbles, minlength=16)
        expected = nibbles.size / 16
        assert float(((counts - expected) ** 2 / expected).sum()) < 15 + 6 * np.sqrt(30)  # 15 dof, six sigma
        bits = np.unpackbits(party["received"][1].numpy())
        assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size)
        assert not (p0["carry"] ^ p1["carry"]).any()  # 0 + 0: no carry
