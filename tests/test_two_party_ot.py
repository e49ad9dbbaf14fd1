"""Two-party preprocessing without a dealer, its first layer: oblivious transfer and the
triples made from it, between two real party processes (gloo, and the TLS mesh)."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
import torch

from harness import run_parties
from smpc import keys
from smpc.twoparty import ot
from smpc.twoparty.ot import KAPPA, POINT_BYTES, ExtensionReceiver, ExtensionSender, OtError, BaseSender
from smpc.twoparty.triples import OtCorrelations

RING = 1 << 64
EDGES = [0, 1, -1, 2, -2, 1 << 62, -(1 << 62), (1 << 63) - 1, -(1 << 63), 12345, -98765, (1 << 32) + 7]


def _signed(v: int) -> int:
    v %= RING
    return v - RING if v >= 1 << 63 else v


def _random_bits(m: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(secrets.token_bytes(m // 8), dtype=np.uint8), bitorder="little")


# -- the OTs alone, in one process (the classes never touch the network) ---------


def _pair() -> tuple[ExtensionReceiver, ExtensionSender]:
    receiver, sender = ExtensionReceiver(0), ExtensionSender(0)
    receiver.base.finish(sender.base.query(receiver.base.public()))
    return receiver, sender


def test_the_receiver_gets_exactly_the_message_of_its_choice_batch_after_batch():
    receiver, sender = _pair()
    for m in (8, 1024, 70_000 - 70_000 % 8):  # the last spans two passes of the transpose
        choices = _random_bits(m)
        u, chosen = receiver.columns(choices)
        zero, one = sender.rows(u, m)
        assert np.array_equal(chosen, np.where(choices[:, None] == 1, one, zero))
        # the other message is unrelated to what the receiver holds
        assert (chosen != np.where(choices[:, None] == 1, zero, one)).all(axis=1).all()
        assert not np.array_equal(zero, one)


def _reference_transpose(columns: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(columns, axis=1, bitorder="little")
    return np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")


def test_the_compiled_transpose_moves_every_bit_to_its_place():
    for m in (8, 24, 1024):
        columns = np.frombuffer(secrets.token_bytes(KAPPA * m // 8), dtype=np.uint8).reshape(KAPPA, m // 8)
        assert np.array_equal(ot._transpose(columns), _reference_transpose(columns))
    for j, i in ((0, 0), (127, 23), (5, 17), (64, 8), (7, 7)):  # one bit set: corners, block edges
        columns = np.zeros((KAPPA, 3), dtype=np.uint8)
        columns[j, i // 8] = 1 << (i % 8)
        rows = ot._transpose(columns)
        assert np.argwhere(np.unpackbits(rows, axis=1, bitorder="little")).tolist() == [[i, j]]
    full = np.full((KAPPA, 2), 0xFF, dtype=np.uint8)
    assert (ot._transpose(full) == 0xFF).all()


def test_a_second_batch_uses_fresh_outputs():
    receiver, sender = _pair()
    choices = np.zeros(64, dtype=np.uint8)
    first, second = receiver.columns(choices)[1], receiver.columns(choices)[1]
    assert not np.isin(first[:, 0], second[:, 0]).any()


def test_malformed_base_ot_points_are_refused_before_use():
    sender = BaseSender(KAPPA)
    good = ExtensionSender(0).base.query(sender.public())
    for bad, why in (
        (good[:-1], "expected 128 base-OT points"),
        (b"\xff" * POINT_BYTES + good[POINT_BYTES:], "base-OT point 0 is not a valid point"),
        (good[:POINT_BYTES] + bytes(POINT_BYTES) + good[2 * POINT_BYTES :], "base-OT point 1 is not a valid point"),
    ):
        with pytest.raises(OtError, match=why):
            sender.finish(bad)
    with pytest.raises(OtError, match="sender's point is not a valid point"):
        ExtensionSender(0).base.query(b"\x01" + bytes(POINT_BYTES - 1))
    receiver = ExtensionReceiver(0)
    with pytest.raises(OtError, match="extension message of 1024 bytes for 64 OTs, got 1023"):
        ExtensionSender(0).rows(bytes(1023), 64)
    del receiver


def test_the_receivers_message_is_uniform_whatever_its_choices():
    # what the sender sees of the receiver's choices is u = G(k0) ^ G(k1) ^ r: its bits
    # are balanced and its bytes flat for all-zero and all-one choices alike
    m = 1 << 15
    for fill in (0, 1):
        receiver, sender = _pair()
        u = np.frombuffer(receiver.columns(np.full(m, fill, dtype=np.uint8))[0], dtype=np.uint8)
        bits = np.unpackbits(u)
        assert abs(bits.mean() - 0.5) < 6 * 0.5 / math.sqrt(bits.size)
        counts = np.bincount(u, minlength=256)
        expected = u.size / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 255 + 6 * math.sqrt(2 * 255)  # 255 degrees of freedom, six sigma


# -- between two real parties ---------------------------------------------------


def _triples(rank: int, world_size: int, values: list[int]) -> dict:
    from smpc.twoparty.link import Link

    ot = OtCorrelations(Link())
    ot.setup()
    mine = torch.tensor(values, dtype=torch.int64)
    # the edge values as both a and b: our share of a_other b_self + a_self b_other
    cross = ot._cross(mine.numpy(), (mine * (rank + 1)).numpy(), "products")
    a, b, c = ot.mul_triples(1000)
    r, r2 = ot.squares(1000)
    x, y, z = ot.and_triples(100)
    arithmetic, binary = ot.shared_bits(1001)
    return {
        "cross": torch.from_numpy(cross),
        "mul": (a, b, c),
        "square": (r, r2),
        "and": (x, y, z),
        "bits": (arithmetic, binary),
        "bytes": ot.link.bytes_sent,
        "rounds": ot.link.rounds,
    }


def _check_triples(results: list[dict]) -> None:
    p0, p1 = results
    # the OLEs on edge values: p0 offers v, p1 offers 2 v, both choose with v
    for i, v in enumerate(EDGES):
        want = _signed(v * v + 2 * v * v)  # a0 b1 + a1 b0 with a0 = v, a1 = 2 v, b = v
        assert _signed(int(p0["cross"][i]) + int(p1["cross"][i])) == want, v
    a, b, c = (p0["mul"][i] + p1["mul"][i] for i in range(3))
    assert torch.equal(a * b, c)
    r, r2 = (p0["square"][i] + p1["square"][i] for i in range(2))
    assert torch.equal(r * r, r2)
    x, y, z = (p0["and"][i] ^ p1["and"][i] for i in range(3))
    assert torch.equal(x & y, z)
    # a's bits are random, not constant: 6,400 of them balanced within six sigma
    a_bits = np.unpackbits(x.numpy().view(np.uint8))
    assert abs(a_bits.mean() - 0.5) < 6 * 0.5 / math.sqrt(a_bits.size)
    arithmetic, binary = p0["bits"][0] + p1["bits"][0], p0["bits"][1] ^ p1["bits"][1]
    assert torch.equal(arithmetic, binary)
    assert set(binary.tolist()) == {0, 1}
    assert 400 < int(binary.sum()) < 600


def test_triples_made_by_the_two_parties_alone_are_correct_over_gloo():
    results = run_parties(_triples, 2, EDGES, timeout=180)
    _check_triples(results)
    # the base OTs (2), then per kind: the OLEs, products, squares (2 each: the extension,
    # the corrections), the AND triples (1: no corrections), the shared bits (2)
    assert results[0]["rounds"] == 2 + 2 + 2 + 2 + 1 + 2
    assert results[0]["bytes"] == results[1]["bytes"]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    keys.create_ca(directory)
    for name in ("p0", "p1"):
        keys.issue(directory, name)
    return directory


def test_triples_made_by_the_two_parties_alone_are_correct_over_tls(consortium):
    _check_triples(run_parties(_triples, 2, EDGES, tls_dir=consortium, timeout=180))


def _hostile(rank: int, world_size: int, fault: str) -> str:
    from smpc.errors import PartyError
    from smpc.twoparty.link import Link

    link = Link(peer=f"p{1 - rank}")
    ot = OtCorrelations(link)
    if rank == 1:  # the hostile peer sends its one message and leaves
        link.exchange(b"\xff" * POINT_BYTES if fault == "point" else bytes(POINT_BYTES - 1), POINT_BYTES)
        return ""
    try:
        ot.setup()
    except PartyError as error:
        return str(error)
    return "no error"


def test_a_peer_that_sends_a_malformed_point_is_named(consortium):
    message = run_parties(_hostile, 2, "point", tls_dir=consortium, timeout=120)[0]
    assert message == (
        "p1 broke the protocol in the two-party preprocessing (base OTs): "
        "the base-OT sender's point is not a valid point of the group"
    )


def test_a_peer_that_sends_a_message_of_the_wrong_size_is_named(consortium):
    message = run_parties(_hostile, 2, "size", tls_dir=consortium, timeout=120)[0]
    assert "party p1 broke the protocol" in message and "shape [31]" in message and "shape [32]" in message
