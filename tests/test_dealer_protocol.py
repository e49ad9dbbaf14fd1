"""The dealer's protocol alone: its message schemas, its states (no I/O), and a party's
material stream over a real socket pair, where a replayed, foreign or corrupted item is
refused by name."""

from __future__ import annotations

import secrets
import socket
import threading

import pytest
import torch

from smpc import wire
from smpc.dealer import messages as m
from smpc.dealer.material import Binding
from smpc.dealer.states import ProtocolError, RollCall, SettingsError, StreamState, run_label
from smpc.dealer.streams import MaterialStream
from smpc.errors import PartyError

EVERY_SCHEMA = [
    m.CheckIn("alice", 0, {"batch_size": "ab12"}),
    m.Abort("bob", 1, {}, "settings differ"),
    m.Start(6),
    m.Refill(8, 16),
    m.Ready(0, 3),
    m.Pooled(8, 0, 2),
    m.Ping(),
    m.Bye(),
    m.Error("went wrong"),
    m.Seed(bytes(range(32))),
]


def _pair():
    a, b = socket.socketpair()
    a.settimeout(5), b.settimeout(5)
    return a, b


@pytest.mark.parametrize("message", EVERY_SCHEMA, ids=lambda msg: type(msg).__name__)
def test_every_message_round_trips_as_its_own_schema(message):
    a, b = _pair()
    with a, b:
        m.send(a, message)
        assert m.recv(b) == message


def test_material_keeps_its_tag_and_tensor():
    a, b = _pair()
    with a, b:
        m.send(a, m.Material(b"t" * 16, torch.arange(6, dtype=torch.long)))
        got = m.recv(b)
        assert got.tag == b"t" * 16 and torch.equal(got.tensor, torch.arange(6))


@pytest.mark.parametrize(
    "kind, body, error",
    [
        (
            wire.Kind.CHECK_IN,
            {"party": "alice", "rank": "0", "agreement": {}},
            "CHECK_IN: field 'rank': expected a non-negative integer, got '0'",
        ),
        (
            wire.Kind.CHECK_IN,
            {"party": "alice", "rank": 0},
            "CHECK_IN: field 'agreement': expected a mapping of strings",
        ),
        (wire.Kind.START, {"batches": True}, "START: field 'batches': expected a non-negative integer, got True"),
        (wire.Kind.READY, {"batch": 1}, "READY: field 'prefetch': expected a non-negative integer, got None"),
        (
            wire.Kind.POOLED,
            {"rows": -1, "seq": 0, "index": 0},
            "POOLED: field 'rows': expected a non-negative integer, got -1",
        ),
        (wire.Kind.ERROR, {"message": 7}, "ERROR: field 'message': expected a string, got int"),
        (wire.Kind.HELLO, {"party": "alice", "rank": 0}, "HELLO is not a dealer message"),
    ],
)
def test_a_message_that_fits_no_schema_is_refused_by_field(kind, body, error):
    a, b = _pair()
    with a, b:
        wire.send_json(a, kind, body)
        with pytest.raises(wire.WireError, match=error.replace("(", r"\(")):
            m.recv(b)


def test_a_seed_of_the_wrong_size_is_refused():
    a, b = _pair()
    with a, b:
        wire.send(a, wire.Kind.SEED, torch.zeros(3, dtype=torch.long))
        with pytest.raises(wire.WireError, match=r"SEED: expected 4 int64 \(a 256-bit key\), got torch.int64 \[3\]"):
            m.recv(b)


def test_expect_turns_the_peers_error_into_its_text():
    a, b = _pair()
    with a, b:
        m.send(a, m.Error("the parties differ"))
        with pytest.raises(wire.PeerError, match="the parties differ"):
            m.expect(b, m.Seed)
        m.send(a, m.Ping())
        with pytest.raises(wire.WireError, match="expected SEED, got PING"):
            m.expect(b, m.Seed)


def test_roll_call_takes_each_party_once_with_the_dealers_settings():
    roll = RollCall(["alice", "bob"], {"batch_size": "aa", "model": "bb"})
    assert roll.receive(m.CheckIn("bob", 1, {"batch_size": "aa", "model": "bb"}), "h") == 1
    assert roll.missing() == ["alice"] and not roll.complete
    with pytest.raises(ProtocolError, match=r"dealer: unexpected party 'bob' \(rank 1\) from h"):
        roll.receive(m.CheckIn("bob", 1, {"batch_size": "aa", "model": "bb"}), "h")
    with pytest.raises(ProtocolError, match=r"dealer: unexpected party 'alice' \(rank 1\)"):
        roll.receive(m.CheckIn("alice", 1, {}), "h")
    with pytest.raises(SettingsError, match="agreement check failed: model differs between the dealer and alice"):
        roll.receive(m.CheckIn("alice", 0, {"batch_size": "aa", "model": "cc"}), "h")
    with pytest.raises(SettingsError, match="dealer: stopped before the run: alice reports: precision differs"):
        roll.receive(m.Abort("alice", 0, {}, "precision differs"), "h")
    with pytest.raises(ProtocolError, match="dealer: expected CHECK_IN from h, got PING"):
        roll.receive(m.Ping(), "h")
    roll.receive(m.CheckIn("alice", 0, {"batch_size": "aa", "model": "bb"}), "h")
    assert roll.complete


def test_stream_state_closes_batches_in_order_and_nothing_after_bye():
    state = StreamState(service=False)
    item = m.Material(b"x" * 16, torch.zeros(2, dtype=torch.long))
    assert state.receive(item, b"w") is None
    batch = state.receive(m.Ready(0, 2))
    assert batch.label == run_label(0) and batch.prefetch == 2 and len(batch.items) == 1
    with pytest.raises(ProtocolError, match="the dealer closed batch 2, expected batch 1"):
        state.receive(m.Ready(2, 0))
    with pytest.raises(ProtocolError, match="unexpected POOLED in the dealer's material stream"):
        state.receive(m.Pooled(8, 0, 0))
    state.receive(item)
    with pytest.raises(ProtocolError, match="the dealer said BYE with 1 items of an unfinished batch"):
        state.receive(m.Bye())
    done = StreamState(service=True)
    done.receive(m.Bye())
    with pytest.raises(ProtocolError, match="MATERIAL after the dealer's BYE"):
        done.receive(item)


REQUEST = b"r" * 16


def _dealer_writes(sock, seed, batches):
    # a stand-in dealer: each batch's items tagged for `seed`, as smpc.dealer.server does
    binding = Binding(seed)
    for b, items in enumerate(batches):
        for position, (label, tensor) in enumerate(items):
            m.send(sock, m.Material(binding.tag(REQUEST, label, position, tensor), tensor))
        m.send(sock, m.Ready(b, len(batches) if b == 0 else 0))
    m.send(sock, m.Bye())


def _stream_of(batches, seed, dealer_seed=None):
    party, dealer = _pair()
    writer = threading.Thread(target=_dealer_writes, args=(dealer, dealer_seed or seed, batches))
    writer.start()
    stream = MaterialStream(party, Binding(seed), "alice", timeout_s=5)
    stream.start()
    assert stream.offline_done(len(batches), 5)
    writer.join(5)
    return stream, (party, dealer)


def test_a_party_takes_its_items_in_order():
    seed = secrets.token_bytes(32)
    first, second = torch.arange(4, dtype=torch.long), torch.tensor(7, dtype=torch.long)  # a 0-d item too
    stream, socks = _stream_of([[(run_label(0), first)], [(run_label(1), second)]], seed)
    stream.next_batch()
    assert torch.equal(stream.take(REQUEST, "relu key"), first)
    stream.next_batch()
    assert torch.equal(stream.take(REQUEST, "relu key"), second)
    for s in socks:
        s.close()


def test_a_replayed_key_is_refused():
    # batch 1 carries batch 0's key again, tag and all
    seed = secrets.token_bytes(32)
    key = torch.arange(4, dtype=torch.long)
    stream, socks = _stream_of([[(run_label(0), key)], [(run_label(0), key)]], seed)
    stream.next_batch()
    stream.take(REQUEST, "relu key of 4 elements")
    stream.next_batch()
    with pytest.raises(
        PartyError,
        match=r"dealer stream of alice: item #0 of batch 1 \(relu key of 4 elements\): made for "
        r"another request, batch or run",
    ):
        stream.take(REQUEST, "relu key of 4 elements")
    for s in socks:
        s.close()


def test_a_key_of_another_run_or_for_another_request_is_refused():
    stream, socks = _stream_of(
        [[(run_label(0), torch.zeros(4, dtype=torch.long))]],
        secrets.token_bytes(32),
        dealer_seed=secrets.token_bytes(32),
    )
    stream.next_batch()
    with pytest.raises(PartyError, match="made for another request, batch or run"):
        stream.take(REQUEST, "ltz key")
    for s in socks:
        s.close()
    stream, socks = _stream_of([[(run_label(0), torch.zeros(4, dtype=torch.long))]], b"k" * 32)
    stream.next_batch()
    with pytest.raises(PartyError, match="made for another request, batch or run"):
        stream.take(b"q" * 16, "ltz key")
    for s in socks:
        s.close()


def test_corrupted_key_bytes_are_refused():
    seed = secrets.token_bytes(32)
    party, dealer = _pair()
    key = torch.arange(8, dtype=torch.long)
    tag = Binding(seed).tag(REQUEST, run_label(0), 0, key)
    damaged = key.clone()
    damaged[3] ^= 1 << 40
    m.send(dealer, m.Material(tag, damaged))
    m.send(dealer, m.Ready(0, 1))
    stream = MaterialStream(party, Binding(seed), "bob", timeout_s=5)
    stream.start()
    stream.next_batch()
    with pytest.raises(
        PartyError,
        match=r"dealer stream of bob: item #0 of batch 0 \(trunc key\): its bytes differ from "
        r"what the dealer made",
    ):
        stream.take(REQUEST, "trunc key")
    party.close(), dealer.close()


def test_an_item_the_dealer_never_sent_is_missing_by_name():
    stream, socks = _stream_of([[]], secrets.token_bytes(32))
    stream.next_batch()
    with pytest.raises(
        PartyError, match=r"item #0 of batch 0 \(ltz key\): missing: the dealer traced a different computation"
    ):
        stream.take(REQUEST, "ltz key")
    for s in socks:
        s.close()
