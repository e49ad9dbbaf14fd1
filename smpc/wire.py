"""The one wire format for smpc's own connections (dealer <-> parties).

A message is a fixed header then raw bytes:

    magic "SMPC" | version u8 | kind u8 | dtype u8 | ndim u8 | tag 16 bytes | length u64 | shape: ndim x u64

followed by `length` bytes: a tensor's raw little-endian data (JSON control messages
are UTF-8 bytes sent as a uint8 tensor). Kinds and dtypes come from explicit tables;
the header is checked (magic, version, kind, dtype, ndim, length == shape x itemsize,
length <= the receiver's limit) before anything is allocated. No pickle.
"""

from __future__ import annotations

import enum
import json
import math
import socket
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from smpc.errors import SmpcError

MAGIC = b"SMPC"
VERSION = 1
MAX_NDIM = 8
DEFAULT_LIMIT = 1 << 31  # bytes in one message
_HEADER = struct.Struct("<4sBBBB16sQ")
_NO_TAG = bytes(16)


class Kind(enum.IntEnum):
    # party <-> party (TLS transport, smpc.transport)
    HELLO = 1  # JSON {party, rank}: who opens this connection
    DATA = 8  # one tensor of a CrypTen collective
    # party <-> dealer: one schema each, in smpc.dealer.messages
    SEED = 2
    START = 3
    MATERIAL = 4
    READY = 5
    ERROR = 6  # either way, on any connection: JSON {message}
    BYE = 7
    PING = 9
    CHECK_IN = 10
    ABORT = 11
    REFILL = 12
    POOLED = 13


_DTYPES = {1: torch.int64, 2: torch.float32, 3: torch.uint8}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}


class WireError(SmpcError):
    """A malformed or unexpected message, or a closed connection.

    A peer (a party, the dealer) broke the protocol or the network failed: the line
    names the peer; read its log. Nothing it sent was used."""

    code = "wire"


class PeerError(WireError):
    """The peer reported an error (an ERROR message): its text is the cause.

    Read the cause, and the peer's own log for its root cause."""

    code = "peer"


class ConnectionClosed(WireError):
    """The peer closed the connection (as opposed to sending something malformed).

    The peer stopped: read its log; the launcher names the root cause."""

    code = "connection-closed"


def one_line(text: Any, limit: int = 500) -> str:
    """A peer's free text (an error, a reason) as one bounded line, fit for a log."""
    return " ".join(str(text).split())[:limit]


@dataclass(frozen=True)
class Message:
    kind: Kind
    tensor: torch.Tensor
    tag: bytes = _NO_TAG

    def json(self) -> dict[str, Any]:
        """Decode a control message's JSON body."""
        try:
            value = json.loads(self.tensor.numpy().tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WireError(f"{self.kind.name}: body is not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise WireError(f"{self.kind.name}: body is not a JSON object")
        return value


def _frame(kind: Kind, tensor: torch.Tensor, tag: bytes) -> tuple[bytes, memoryview]:
    if tensor.dtype not in _DTYPE_CODES:
        raise WireError(f"dtype {tensor.dtype} cannot be sent")
    if tensor.dim() > MAX_NDIM or len(tag) != 16:
        raise WireError("too many dimensions or a bad tag")
    array = tensor.detach().contiguous().cpu().numpy().reshape(-1)
    # numpy arrays are buffers; its stubs say so only for Python >= 3.12
    data = memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B")  # type: ignore[arg-type]
    shape = struct.pack(f"<{tensor.dim()}Q", *tensor.shape)
    header = _HEADER.pack(MAGIC, VERSION, int(kind), _DTYPE_CODES[tensor.dtype], tensor.dim(), tag, len(data))
    return header + shape, data


def json_tensor(obj: dict[str, Any]) -> torch.Tensor:
    """A JSON object as the uint8 tensor that carries it."""
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)


class Writable(Protocol):
    """What a message is written to: a socket, or a wrapper of one (sendall only)."""

    def sendall(self, data: bytes | bytearray | memoryview, /) -> None: ...


def send(sock: Writable, kind: Kind, tensor: torch.Tensor, tag: bytes = _NO_TAG) -> int:
    """Send one message; returns the bytes written."""
    head, data = _frame(kind, tensor, tag)
    if len(data) <= 65536:  # small: one write (one TLS record, one segment)
        sock.sendall(head + bytes(data))
    else:
        sock.sendall(head)
        sock.sendall(data)  # straight from the tensor's memory, no extra copy
    return len(head) + len(data)


def send_json(sock: Writable, kind: Kind, obj: dict[str, Any]) -> int:
    return send(sock, kind, json_tensor(obj))


EAGER_BYTES = 16 << 20  # a body up to this is allocated at once; a larger one as it arrives


class Readable(Protocol):
    """What a message is read from: a socket, or a wrapper of one (recv_into only)."""

    def recv_into(self, buffer: memoryview, nbytes: int, /) -> int: ...


def _fill(sock: Readable, view: memoryview) -> None:
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], len(view) - got)
        if k == 0:
            raise ConnectionClosed("connection closed by peer")
        got += k


def _read_exact(sock: Readable, n: int) -> bytearray:
    if n <= EAGER_BYTES:
        buf = bytearray(n)
        _fill(sock, memoryview(buf))
        return buf
    # a header may claim up to the limit and then send little: memory follows the bytes
    # that really arrive (chunk by chunk), copied once into place at the end
    chunks = []
    for start in range(0, n, EAGER_BYTES):
        chunk = bytearray(min(EAGER_BYTES, n - start))
        _fill(sock, memoryview(chunk))
        chunks.append(chunk)
    buf = bytearray(n)
    for i, chunk in enumerate(chunks):
        buf[i * EAGER_BYTES : i * EAGER_BYTES + len(chunk)] = chunk
        chunks[i] = None  # type: ignore[call-overload]  # freed as copied
    return buf


def decode_header(raw: bytes, limit: int = DEFAULT_LIMIT) -> tuple[Kind, torch.dtype, int, bytes, int]:
    """Check a header; returns (kind, dtype, ndim, tag, length). Raises WireError."""
    magic, version, kind, dtype, ndim, tag, length = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise WireError("not an smpc message (bad magic)")
    if version != VERSION:
        raise WireError(f"wire version {version}, expected {VERSION}")
    if kind not in Kind._value2member_map_:
        raise WireError(f"unknown message kind {kind}")
    if dtype not in _DTYPES:
        raise WireError(f"unknown dtype code {dtype}")
    if ndim > MAX_NDIM:
        raise WireError(f"{ndim} dimensions, at most {MAX_NDIM}")
    if length > limit:
        raise WireError(f"message of {length} bytes exceeds the limit of {limit}")
    return Kind(kind), _DTYPES[dtype], ndim, tag, length


def recv(sock: Readable, limit: int = DEFAULT_LIMIT) -> Message:
    """Receive one message, validating the header before allocating the body."""
    kind, dtype, ndim, tag, length = decode_header(bytes(_read_exact(sock, _HEADER.size)), limit)
    shape = struct.unpack(f"<{ndim}Q", bytes(_read_exact(sock, 8 * ndim))) if ndim else ()
    itemsize = torch.empty((), dtype=dtype).element_size()
    if math.prod(shape) * itemsize != length:
        raise WireError(f"{kind.name}: shape {list(shape)} does not match {length} bytes")
    body = _read_exact(sock, length)
    tensor = torch.frombuffer(body, dtype=dtype) if length else torch.empty(0, dtype=dtype)
    return Message(kind, tensor.reshape(shape), tag)


def expect(sock: socket.socket, kind: Kind, limit: int = DEFAULT_LIMIT) -> Message:
    """Receive a message of `kind`; an ERROR from the peer becomes a WireError with its text."""
    msg = recv(sock, limit)
    if msg.kind == Kind.ERROR and kind != Kind.ERROR:
        raise PeerError(one_line(msg.json().get("message", "peer reported an error")))
    if msg.kind != kind:
        raise WireError(f"expected {kind.name}, got {msg.kind.name}")
    return msg
