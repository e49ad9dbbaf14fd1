"""The wire format: round trips, and every malformed header refused before allocation."""

from __future__ import annotations

import socket
import struct

import pytest
import torch

from smpc import wire


def _pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


@pytest.mark.parametrize(
    "tensor",
    [torch.arange(12, dtype=torch.long).view(3, 4) - 2**62, torch.rand(2, 3, 4), torch.zeros(0, dtype=torch.long)],
)
def test_tensor_round_trip(tensor):
    a, b = _pair()
    with a, b:
        wire.send(a, wire.Kind.MATERIAL, tensor, tag=b"t" * 16)
        msg = wire.recv(b)
    assert msg.kind == wire.Kind.MATERIAL and msg.tag == b"t" * 16
    assert msg.tensor.dtype == tensor.dtype and torch.equal(msg.tensor, tensor)


def test_json_round_trip_and_error_becomes_exception():
    a, b = _pair()
    with a, b:
        wire.send_json(a, wire.Kind.HELLO, {"party": "alice", "rank": 0})
        assert wire.expect(b, wire.Kind.HELLO).json() == {"party": "alice", "rank": 0}
        wire.send_json(a, wire.Kind.ERROR, {"message": "go away"})
        with pytest.raises(wire.WireError, match="^go away$"):
            wire.expect(b, wire.Kind.SEED)


def _header(magic=b"SMPC", version=1, kind=4, dtype=1, ndim=1, length=8):
    return struct.pack("<4sBBBB16sQ", magic, version, kind, dtype, ndim, bytes(16), length)


@pytest.mark.parametrize(
    "header,message",
    [
        (_header(magic=b"PKL\x80"), "not an smpc message"),
        (_header(version=9), "wire version 9, expected 1"),
        (_header(kind=99), "unknown message kind 99"),
        (_header(dtype=42), "unknown dtype code 42"),
        (_header(ndim=9), "9 dimensions, at most 8"),
        (_header(length=1 << 40), "exceeds the limit"),
    ],
)
def test_bad_headers_are_refused(header, message):
    with pytest.raises(wire.WireError, match=message):
        wire.decode_header(header)


def test_oversized_message_is_refused_before_reading_its_body():
    a, b = _pair()
    with a, b:
        a.sendall(_header(length=1 << 20) + struct.pack("<Q", 1 << 17))
        with pytest.raises(wire.WireError, match="exceeds the limit of 1024"):
            wire.recv(b, limit=1024)


def test_shape_must_match_length():
    a, b = _pair()
    with a, b:
        a.sendall(_header(length=16) + struct.pack("<Q", 3) + bytes(16))
        with pytest.raises(wire.WireError, match=r"shape \[3\] does not match 16 bytes"):
            wire.recv(b)


def test_closed_connection():
    a, b = _pair()
    a.close()
    with b, pytest.raises(wire.WireError, match="connection closed by peer"):
        wire.recv(b)


def test_unsupported_dtype_is_not_sent():
    a, b = _pair()
    with a, b, pytest.raises(wire.WireError, match="cannot be sent"):
        wire.send(a, wire.Kind.MATERIAL, torch.zeros(2, dtype=torch.float64))
