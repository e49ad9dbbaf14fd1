"""The dealer's messages: one typed schema per kind, decoded from the wire and checked.

Every message between a party and the dealer is one of these frozen dataclasses. On the
wire each is a smpc.wire frame: control messages carry a JSON object, SEED and MATERIAL a
tensor. `decode` dispatches on the frame's kind through an explicit table and checks every
field's type and range; anything else is a wire.WireError naming the kind and the field.

    party -> dealer   CHECK_IN {party, rank, agreement}    check in with this run's settings
                      ABORT {party, rank, agreement, reason} stopping before the run (the settings differ)
                      START {batches}                      party 0: a one-off run of that many batches
                      REFILL {rows, seq}                   party 0 of a service: one more batch of that shape bucket
                      PING {}                              party 0 of a service: still here while idle
    dealer -> party   SEED int64[4]                        the 256-bit key this party shares with the dealer
                      MATERIAL tensor, tag                 one request's material (smpc.dealer.material)
                      READY {batch, prefetch}              a run's batch is complete (prefetch: batches held ahead)
                      POOLED {rows, seq, index}            a service's batch is complete
    either way        ERROR {message}, BYE {}
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from typing import Any

import torch

from smpc import wire
from smpc.protocols.csprng import KEY_BYTES

_CONTROL_LIMIT = 1 << 16  # bytes of a JSON control message


@dataclass(frozen=True)
class CheckIn:
    party: str
    rank: int
    agreement: dict[str, str]


@dataclass(frozen=True)
class Abort:
    party: str
    rank: int
    agreement: dict[str, str]
    reason: str


@dataclass(frozen=True)
class Start:
    batches: int


@dataclass(frozen=True)
class Refill:
    rows: int
    seq: int  # 0: the program has no sequence dimension


@dataclass(frozen=True)
class Ready:
    batch: int
    prefetch: int


@dataclass(frozen=True)
class Pooled:
    rows: int
    seq: int
    index: int


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Bye:
    pass


@dataclass(frozen=True)
class Error:
    message: str


@dataclass(frozen=True)
class Seed:
    key: bytes


@dataclass(frozen=True)
class Material:
    tag: bytes
    tensor: torch.Tensor


Message = CheckIn | Abort | Start | Refill | Ready | Pooled | Ping | Bye | Error | Seed | Material

# the JSON kinds: wire kind <-> schema
_JSON: dict[wire.Kind, type[CheckIn | Abort | Start | Refill | Ready | Pooled | Ping | Bye | Error]] = {
    wire.Kind.CHECK_IN: CheckIn,
    wire.Kind.ABORT: Abort,
    wire.Kind.START: Start,
    wire.Kind.REFILL: Refill,
    wire.Kind.READY: Ready,
    wire.Kind.POOLED: Pooled,
    wire.Kind.PING: Ping,
    wire.Kind.BYE: Bye,
    wire.Kind.ERROR: Error,
}
_KIND_OF = {cls: kind for kind, cls in _JSON.items()}


def _field(kind: wire.Kind, body: dict[str, Any], name: str, expected: type) -> Any:
    value = body.get(name)
    if expected is int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
            raise wire.WireError(f"{kind.name}: field {name!r}: expected a non-negative integer, got {value!r}")
    elif expected is str:
        if not isinstance(value, str) or len(value) > 4096:
            raise wire.WireError(f"{kind.name}: field {name!r}: expected a string, got {type(value).__name__}")
    elif not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise wire.WireError(f"{kind.name}: field {name!r}: expected a mapping of strings")
    return value


def decode(msg: wire.Message) -> Message:
    """The typed message of a received frame; WireError when it fits no schema."""
    if msg.kind == wire.Kind.SEED:
        if msg.tensor.dtype != torch.int64 or tuple(msg.tensor.shape) != (KEY_BYTES // 8,):
            raise wire.WireError(
                f"SEED: expected {KEY_BYTES // 8} int64 (a 256-bit key), got {msg.tensor.dtype} {list(msg.tensor.shape)}"
            )
        return Seed(msg.tensor.numpy().tobytes())
    if msg.kind == wire.Kind.MATERIAL:
        if msg.tensor.dtype != torch.int64:
            raise wire.WireError(f"MATERIAL: expected int64 ring elements, got {msg.tensor.dtype}")
        return Material(msg.tag, msg.tensor)
    cls = _JSON.get(msg.kind)
    if cls is None:
        raise wire.WireError(f"{msg.kind.name} is not a dealer message")
    body = msg.json()
    types = {"party": str, "reason": str, "message": str, "agreement": dict}
    return cls(**{f.name: _field(msg.kind, body, f.name, types.get(f.name, int)) for f in fields(cls)})


def send(sock: wire.Writable, message: Message) -> int:
    """Send one message; returns the bytes written."""
    if isinstance(message, Seed):
        return wire.send(sock, wire.Kind.SEED, torch.frombuffer(bytearray(message.key), dtype=torch.int64))
    if isinstance(message, Material):
        return wire.send(sock, wire.Kind.MATERIAL, message.tensor, message.tag)
    return wire.send_json(sock, _KIND_OF[type(message)], {f.name: getattr(message, f.name) for f in fields(message)})


def recv(sock: wire.Readable, limit: int = wire.DEFAULT_LIMIT) -> Message:
    """Receive and decode one message (control messages are bounded to 64 KiB)."""
    return decode(wire.recv(sock, limit))


def expect(sock: socket.socket, cls: type, limit: int = _CONTROL_LIMIT) -> Any:
    """Receive a message of schema `cls`; the peer's ERROR becomes a wire.PeerError with
    its text, any other message a WireError."""
    message = recv(sock, limit)
    if isinstance(message, Error) and cls is not Error:
        raise wire.PeerError(wire.one_line(message.message))
    if not isinstance(message, cls):
        raise wire.WireError(f"expected {_name(cls)}, got {_name(type(message))}")
    return message


def _name(cls: type) -> str:
    return {Seed: "SEED", Material: "MATERIAL"}.get(cls) or _KIND_OF[cls].name
