"""CrypTen tuple providers backed by smpc's trusted dealer.

`PartyProvider` runs inside each party: shares come from the key it shares with the
dealer; party 0 also takes the dealer's corrections, prepared ahead of time and read
from a background stream. `TracingProvider` runs inside the dealer: it records each
request of a shape-only run and emits the correction for it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import torch
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor
from crypten.mpc.provider.provider import TupleProvider

from smpc import wire
from smpc.dealer import material
from smpc.errors import PartyError
from smpc.meter import protocol_meter
from smpc.protocols import fss
from smpc.protocols.csprng import AesCtrGenerator

PROVIDER_NAME = "SMPC_DEALER"


class _DealerTuples(TupleProvider):
    """The five CrypTen provider calls, in terms of `_shares(kind, args, kwargs)`."""

    def _shares(self, kind: str, args: tuple, kwargs: dict[str, Any]) -> list[torch.Tensor]:
        raise NotImplementedError

    def fss_key(self, kind: str, args: tuple) -> Any:
        """This party's key for one FSS gate (smpc.protocols.fss); None in the dealer's trace."""
        raise NotImplementedError

    def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):
        a, b, c = self._shares("additive", (torch.Size(size0), torch.Size(size1), op), kwargs)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b, c))

    def square(self, size, device=None):
        r, r2 = self._shares("square", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(r2, precision=0)

    def generate_binary_triple(self, size0, size1, device=None):
        a, b, c = self._shares("binary", (torch.Size(size0), torch.Size(size1)), {})
        return tuple(BinarySharedTensor.from_shares(t) for t in (a, b, c))

    def wrap_rng(self, size, device=None):
        r, theta = self._shares("wraps", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(theta, precision=0)

    def B2A_rng(self, size, device=None):
        bit_b, bit_a = self._shares("B2A", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(bit_a, precision=0), BinarySharedTensor.from_shares(bit_b)


class _MaterialReader:
    """Party 0's side of the dealer's connection: a background thread reads batches of
    corrections (MATERIAL messages, each closed by READY) and hands each batch to
    `_arrived`; a lost connection goes to `_lost`. `take` serves the current batch,
    in request order, each correction checked against the request's digest."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._cond = threading.Condition()
        self._current: list[tuple[bytes, torch.Tensor]] = []
        self._position = 0
        self.wait_s = 0.0  # time the online phase spent waiting for material
        self.bytes_received = 0

    def _arrived(self, info: dict[str, Any], items: list[tuple[bytes, torch.Tensor]]) -> None:
        raise NotImplementedError

    def _lost(self, exc: Exception) -> None:
        raise NotImplementedError

    def _receive(self) -> None:
        items: list[tuple[bytes, torch.Tensor]] = []
        try:
            while True:
                msg = wire.recv(self._sock)
                self.bytes_received += msg.tensor.numel() * msg.tensor.element_size()
                if msg.kind == wire.Kind.MATERIAL:
                    items.append((msg.tag, msg.tensor))
                elif msg.kind == wire.Kind.READY:
                    self._arrived(msg.json(), items)
                    items = []
                elif msg.kind == wire.Kind.BYE:
                    return
                else:
                    raise wire.WireError(msg.json().get("message", f"unexpected {msg.kind.name}"))
        except (wire.WireError, OSError, ValueError, KeyError) as exc:
            self._lost(exc)

    def take(self, tag: bytes) -> torch.Tensor:
        if self._position >= len(self._current):
            raise PartyError("dealer material exhausted: the dealer traced a different computation")
        got_tag, tensor = self._current[self._position]
        if got_tag != tag:
            raise PartyError(f"dealer material #{self._position} is for another request: the dealer traced a different computation")
        self._position += 1
        return tensor


class MaterialStream(_MaterialReader):
    """Party 0's receiver: reads the dealer's corrections in a background thread.

    The dealer says (with batch 0) how many batches to hold in advance; the offline
    phase waits until that many have arrived, and the receiver never holds more
    (the dealer then blocks on the connection until party 0 has used one).
    """

    def __init__(self, sock: socket.socket, timeout_s: float, offline_timeout_s: float) -> None:
        super().__init__(sock)
        self._timeout_s = timeout_s
        self._offline_timeout_s = offline_timeout_s
        self._ready: list[list[tuple[bytes, torch.Tensor]] | Exception] = []
        self._limit = 1
        self._announced = 0  # batches the dealer prepares ahead (0 until batch 0 arrives)
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _arrived(self, info: dict[str, Any], items: list[tuple[bytes, torch.Tensor]]) -> None:
        with self._cond:
            if "prefetch" in info:
                self._limit = self._announced = max(1, int(info["prefetch"]))
            self._ready.append(items)
            self._cond.notify_all()
            while len(self._ready) >= self._limit:
                self._cond.wait()

    def _lost(self, exc: Exception) -> None:
        with self._cond:
            self._ready.append(exc)
            self._limit = 1 << 30
            self._cond.notify_all()

    def wait_offline(self, batches: int) -> None:
        """Block until the batches the dealer prepares in advance have all arrived."""
        def arrived() -> bool:
            failed = any(isinstance(b, Exception) for b in self._ready)
            return failed or (self._announced and len(self._ready) >= min(batches, self._announced))

        with self._cond:
            if not self._cond.wait_for(arrived, timeout=self._offline_timeout_s):
                raise PartyError(f"the dealer's offline phase did not finish within {self._offline_timeout_s:g} s")

    def next_batch(self) -> None:
        """Switch to the next batch's corrections (waits at most the op timeout)."""
        started = time.perf_counter()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready, timeout=self._timeout_s):
                raise PartyError(f"dealer sent no material within timeouts.op_s = {self._timeout_s:g} s")
            item = self._ready.pop(0)
            self._cond.notify_all()
        self.wait_s += time.perf_counter() - started
        if isinstance(item, Exception):
            raise PartyError(f"dealer connection lost: {item}")
        self._current, self._position = item, 0



class MaterialPool(_MaterialReader):
    """Party 0's pool of a service's dealer material: batches of each size, prepared
    ahead by the dealer and read in a background thread. Using one asks the dealer
    for another of that size, so the pool refills as it is used; when it runs dry the
    next batch waits (up to the op timeout), it does not fail. A background thread
    pings the dealer so that it can tell an idle service from a vanished one.
    """

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        # the dealer may have nothing to send for hours (an idle service): reads block;
        # a dealer that dies closes the connection, one that hangs is noticed by
        # next_batch's bounded wait
        sock.settimeout(None)
        super().__init__(sock)
        self._timeout_s = timeout_s
        self._ping_s = min(2.0, timeout_s / 2)  # the dealer gives up after 3 op timeouts of silence
        self._ready: dict[int, list[tuple[int, list[tuple[bytes, torch.Tensor]]]]] = {}
        self._send_lock = threading.Lock()
        self._failed: str | None = None
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._receive, daemon=True),
            threading.Thread(target=self._ping, daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _arrived(self, info: dict[str, Any], items: list[tuple[bytes, torch.Tensor]]) -> None:
        with self._cond:
            self._ready.setdefault(int(info["size"]), []).append((int(info["index"]), items))
            self._cond.notify_all()

    def _lost(self, exc: Exception) -> None:
        with self._cond:
            if not self._closed.is_set():
                self._failed = f"the dealer is gone ({exc})"
            self._cond.notify_all()

    def _ping(self) -> None:
        while not self._closed.wait(self._ping_s):
            try:
                self._send(wire.Kind.PING, {})
            except OSError:
                return

    def _send(self, kind: wire.Kind, body: dict[str, Any]) -> None:
        with self._send_lock:
            wire.send_json(self._sock, kind, body)

    @property
    def failed(self) -> str | None:
        """Why the dealer cannot be used any more, or None."""
        return self._failed

    def level(self) -> dict[int, int]:
        """Batches ready, by size."""
        with self._cond:
            return {size: len(batches) for size, batches in self._ready.items()}

    def next_batch(self, size: int, index: int) -> None:
        """Use the `index`-th batch of `size` rows (waits for it at most the op timeout),
        and ask the dealer for one more of that size."""
        started = time.perf_counter()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready.get(size) or self._failed, timeout=self._timeout_s):
                raise PartyError(f"the dealer prepared no batch of {size} rows within timeouts.op_s = {self._timeout_s:g} s")
            if self._failed:
                raise PartyError(self._failed)
            got, items = self._ready[size].pop(0)
        self.wait_s += time.perf_counter() - started
        if got != index:
            raise PartyError(f"dealer material out of order: batch {got} of {size} rows, expected {index}")
        self._current, self._position = items, 0
        try:
            self._send(wire.Kind.NEXT, {"size": size})
        except OSError as exc:
            raise PartyError(f"the dealer is gone ({exc})") from None


    def stop(self) -> None:
        """Stop pinging (the connection is about to be closed)."""
        self._closed.set()

    def bye(self) -> None:
        """Stop pinging and tell the dealer this party is done."""
        self._closed.set()
        try:
            self._send(wire.Kind.BYE, {})
        except OSError:
            pass


class PartyProvider(_DealerTuples):
    """Inside a party: own shares from the seed shared with the dealer; party 0 adds corrections."""

    NAME = PROVIDER_NAME

    def __init__(self) -> None:
        super().__init__()
        self.party_rank = -1
        self.generator: AesCtrGenerator | None = None
        self.stream: MaterialStream | None = None

    def bind(self, rank: int, seed: bytes, stream: "MaterialStream | MaterialPool | None") -> None:
        self.party_rank, self.generator, self.stream = rank, material.seeded(seed), stream
        self.seed = seed

    def start_batch(self, size: int, index: int) -> None:
        """A service's batch: draw from the stream of the `index`-th batch of `size` rows."""
        self.generator = material.seeded(material.batch_seed(self.seed, size, index))

    def _shares(self, kind, args, kwargs):
        if self.generator is None:
            raise PartyError("the dealer provider is not connected")
        shares = material.draw(kind, self.generator, self.party_rank, args, kwargs)
        if self.party_rank == 0:
            shares.append(self.stream.take(material.request_tag(kind, args, kwargs)))
        return shares

    def fss_key(self, kind, args):
        if self.generator is None:
            raise PartyError("the dealer provider is not connected")
        item = None
        if self.party_rank in material.receivers(kind):
            if self.stream is None:
                raise PartyError("protocol.comparisons: fss, but this party has no stream of keys from the dealer")
            item = self.stream.take(material.request_tag(kind, args, {}))
        protocol_meter.keys(kind, fss.count(args), 0 if item is None else item.numel() * item.element_size())
        try:
            return fss.party_key(kind, self.generator, self.party_rank, args, item)
        except ValueError as exc:
            raise PartyError(f"dealer key stream: a {kind} key: {exc}") from None


class TracingProvider(_DealerTuples):
    """Inside the dealer: records requests of a shape-only run and emits their corrections.
    The run itself gets zero tensors: only shapes matter to it."""

    NAME = PROVIDER_NAME

    def __init__(self, generators: list[AesCtrGenerator], emit: Callable[[bytes, dict[int, torch.Tensor]], None]) -> None:
        super().__init__()
        self.generators = generators
        self.emit = emit
        self.requests: list[tuple[str, tuple, dict[str, Any]]] = []

    def _shares(self, kind, args, kwargs):
        self.requests.append((kind, args, kwargs))
        self.emit(material.request_tag(kind, args, kwargs), material.material(kind, self.generators, args, kwargs))
        return [torch.zeros(size, dtype=torch.long) for size, _ in material.spec(kind, args, kwargs)]

    def fss_key(self, kind, args):
        self.requests.append((kind, args, {}))
        self.emit(material.request_tag(kind, args, {}), material.material(kind, self.generators, args, {}))
        return None
