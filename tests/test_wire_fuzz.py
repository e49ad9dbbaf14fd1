"""The frame decoder and the JSON bodies under arbitrary bytes: a peer (even one with a
valid certificate) can send anything; every frame is either a Message or a WireError,
never another exception, and no body is allocated beyond the limit."""

from __future__ import annotations

import socket
import threading

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc import wire

LIMIT = 1 << 16


def _decode(data: bytes) -> wire.Message | wire.WireError:
    a, b = socket.socketpair()
    try:
        writer = threading.Thread(target=lambda: (a.sendall(data), a.shutdown(socket.SHUT_WR)))
        writer.start()
        b.settimeout(5)
        try:
            return wire.recv(b, limit=LIMIT)
        except wire.WireError as exc:
            return exc
        finally:
            writer.join(5)
    finally:
        a.close()
        b.close()


def _valid_frames() -> list[bytes]:
    frames = []
    for kind, tensor in [
        (wire.Kind.HELLO, wire.json_tensor({"party": "alice", "rank": 0, "agreement": {}})),
        (wire.Kind.MATERIAL, torch.arange(12, dtype=torch.long).reshape(3, 4)),
        (wire.Kind.SEED, torch.zeros(4, dtype=torch.long)),
    ]:
        head, data = wire._frame(kind, tensor, bytes(16))
        frames.append(head + bytes(data))
    return frames


FRAMES = _valid_frames()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_are_a_message_or_a_wire_error(data):
    assert isinstance(_decode(data), (wire.Message, wire.WireError))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(FRAMES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_damaged_and_truncated_frames_are_a_message_or_a_wire_error(frame, flips, cut):
    data = bytearray(frame)
    for position, value in flips:
        data[position % len(data)] = value
    got = _decode(bytes(data[: cut % (len(data) + 1)]))
    assert isinstance(got, (wire.Message, wire.WireError))
    if isinstance(got, wire.Message):
        assert got.tensor.numel() * got.tensor.element_size() <= LIMIT
        try:
            body = got.json()
            assert isinstance(body, dict)
        except wire.WireError:
            pass


def test_an_oversized_frame_is_refused_before_its_body_is_read():
    head, _ = wire._frame(wire.Kind.MATERIAL, torch.zeros(2, dtype=torch.long), bytes(16))
    # claim 2^40 bytes: refused from the header alone (nothing that large is allocated)
    fields = list(wire._HEADER.unpack(head[: wire._HEADER.size]))
    fields[-1] = 1 << 40
    forged = wire._HEADER.pack(*fields) + head[wire._HEADER.size :]
    got = _decode(forged)
    assert isinstance(got, wire.WireError) and "exceeds the limit" in str(got)


@given(st.binary(max_size=300))
def test_any_json_body_is_an_object_or_a_wire_error(data):
    message = wire.Message(
        wire.Kind.HELLO,
        torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8),
    )
    try:
        assert isinstance(message.json(), dict)
    except wire.WireError:
        pass
