"""A party's reading side of the dealer's connection: the material of each batch, read in
a background thread, served in request order and checked item by item.

Every MATERIAL item's tag binds it to this party's dealer key, the batch, its position and
its bytes (smpc.dealer.material.Binding): an item made for another request, batch or run,
or whose bytes changed on the way, stops the party at once with a line naming the
dealer stream and what differed.
"""

from __future__ import annotations

import threading
import time
from typing import cast

import torch

from smpc import wire
from smpc.duplex import Duplex
from smpc.dealer import messages as m
from smpc.dealer.material import Binding
from smpc.dealer.states import Batch, ProtocolError, StreamState, pool_label
from smpc.errors import PartyError
from smpc.model.buckets import Bucket


class _MaterialReader:
    """A background thread decodes the dealer's messages into batches (`_arrived`), or
    reports why it cannot (`_lost`); `take` serves the current batch in request order."""

    def __init__(self, sock: Duplex, binding: Binding, party: str, service: bool) -> None:
        self._sock = sock
        self._binding = binding
        self._party = party
        self._state = StreamState(service)
        self._cond = threading.Condition()
        self._current = Batch("none")
        self._position = 0
        self.wait_s = 0.0  # time the online phase spent waiting for material
        self.bytes_received = 0

    def _arrived(self, batch: Batch) -> None:
        raise NotImplementedError

    def _lost(self, exc: Exception) -> None:
        raise NotImplementedError

    def _receive(self) -> None:
        try:
            while not self._state.ended:
                message = m.recv(self._sock)
                mac = b""
                if isinstance(message, m.Material):
                    self.bytes_received += message.tensor.numel() * 8
                    mac = self._binding.what(message.tag[:8], message.tensor)  # off the online thread
                batch = self._state.receive(message, mac)
                if batch is not None:
                    self._arrived(batch)
        except (wire.WireError, ProtocolError, OSError) as exc:
            self._lost(exc)

    def take(self, request: bytes, what: str) -> torch.Tensor:
        """The next item of the current batch, checked against this party's own request
        (`request`: its digest; `what`: how to name it, e.g. "relu key of 61440 elements")."""
        where = f"dealer stream of {self._party}: item #{self._position} of {self._current.label} ({what})"
        if self._position >= len(self._current.items):
            raise PartyError(f"{where}: missing: the dealer traced a different computation")
        tag, mac, tensor = self._current.items[self._position]
        differs = self._binding.check(tag, request, self._current.label, self._position, mac)
        if differs is not None:
            raise PartyError(f"{where}: {differs}")
        self._position += 1
        return tensor


class MaterialStream(_MaterialReader):
    """A one-off run's material. The dealer says (with batch 0) how many batches to hold
    in advance; the offline phase waits until that many have arrived, and the reader
    never holds more (the dealer then blocks until this party has used one)."""

    def __init__(self, sock: Duplex, binding: Binding, party: str, timeout_s: float) -> None:
        super().__init__(sock, binding, party, service=False)
        self._timeout_s = timeout_s
        self._ready: list[Batch | Exception] = []
        self._limit = 1
        self._announced = 0  # batches the dealer prepares ahead (0 until batch 0 arrives)
        self._thread = threading.Thread(target=self._receive, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _arrived(self, batch: Batch) -> None:
        with self._cond:
            if batch.prefetch:
                self._limit = self._announced = batch.prefetch
            self._ready.append(batch)
            self._cond.notify_all()
            while len(self._ready) >= self._limit:
                self._cond.wait()

    def _lost(self, exc: Exception) -> None:
        with self._cond:
            self._ready.append(exc)
            self._limit = 1 << 30
            self._cond.notify_all()

    def offline_done(self, batches: int, wait_s: float) -> bool:
        """Whether the batches the dealer prepares in advance have all arrived (or the
        stream failed: the next batch says why), waiting at most `wait_s` for them."""

        def arrived() -> bool:
            failed = any(isinstance(b, Exception) for b in self._ready)
            return failed or (self._announced > 0 and len(self._ready) >= min(batches, self._announced))

        with self._cond:
            return self._cond.wait_for(arrived, timeout=wait_s)

    def next_batch(self, bucket: Bucket | None = None, index: int = 0) -> None:
        """Switch to the next batch's material (waits at most the op timeout); a run's
        batches come in order, so `bucket` and `index` (a service's) are not needed."""
        started = time.perf_counter()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready, timeout=self._timeout_s):
                raise PartyError(f"dealer sent no material within timeouts.op_s = {self._timeout_s:g} s")
            item = self._ready.pop(0)
            self._cond.notify_all()
        self.wait_s += time.perf_counter() - started
        if isinstance(item, Exception):
            raise PartyError(f"dealer stream of {self._party}: {item}")
        self._current, self._position = item, 0


class MaterialPool(_MaterialReader):
    """A reading party's pool of a service's dealer material (party 0's corrections; with
    comparisons: fss, every party's keys): batches of each shape bucket, prepared ahead by the
    dealer and read in a background thread. Party 0 (`requester`) drives it: using a
    batch asks the dealer for another of that bucket, so the pool refills as it is used;
    when it runs dry the next batch waits (up to the op timeout), it does not fail; and
    a background thread pings the dealer so that it can tell an idle service from a
    vanished one. The dealer sends every reading party its part of each batch.
    """

    def __init__(self, sock: Duplex, binding: Binding, party: str, timeout_s: float, requester: bool = True) -> None:
        # the dealer may have nothing to send for hours (an idle service): reads block;
        # a dealer that dies closes the connection, one that hangs is noticed by
        # next_batch's bounded wait
        sock.settimeout(None)
        super().__init__(sock, binding, party, service=True)
        self._timeout_s = timeout_s
        self._ping_s = min(2.0, timeout_s / 2)  # the dealer gives up after 3 op timeouts of silence
        self._ready: dict[Bucket, list[Batch]] = {}
        self._send_lock = threading.Lock()
        self._failed: str | None = None
        self._closed = threading.Event()
        self.requester = requester
        self._threads = [threading.Thread(target=self._receive, daemon=True)]
        if requester:
            self._threads.append(threading.Thread(target=self._ping, daemon=True))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _arrived(self, batch: Batch) -> None:
        with self._cond:
            # a service's stream closes only POOLED batches, each with its shape bucket (states)
            self._ready.setdefault(cast(Bucket, batch.bucket), []).append(batch)
            self._cond.notify_all()

    def _lost(self, exc: Exception) -> None:
        with self._cond:
            if not self._closed.is_set():
                self._failed = f"the dealer is gone ({exc})"
            self._cond.notify_all()

    def _ping(self) -> None:
        while not self._closed.wait(self._ping_s):
            try:
                self._send(m.Ping())
            except OSError:
                return

    def _send(self, message: m.Message) -> None:
        with self._send_lock:
            m.send(self._sock, message)

    @property
    def failed(self) -> str | None:
        """Why the dealer cannot be used any more, or None."""
        return self._failed

    def holds_every(self, buckets: tuple[Bucket, ...], wait_s: float) -> bool:
        """Whether a batch of each of `buckets` is ready (the dealer's offline phase),
        waiting at most `wait_s`; raises PartyError when the dealer is gone."""
        with self._cond:
            self._cond.wait_for(lambda: self._failed or all(self._ready.get(b) for b in buckets), timeout=wait_s)
            if self._failed:
                raise PartyError(self._failed)
            return all(self._ready.get(b) for b in buckets)

    def level(self) -> dict[Bucket, int]:
        """Batches ready, by shape bucket."""
        with self._cond:
            return {bucket: len(batches) for bucket, batches in self._ready.items()}

    def next_batch(self, bucket: Bucket, index: int) -> None:
        """Use the `index`-th batch of `bucket` (waits for it at most the op timeout),
        and ask the dealer for one more of that bucket."""
        started = time.perf_counter()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready.get(bucket) or self._failed, timeout=self._timeout_s):
                raise PartyError(
                    f"the dealer prepared no batch of {bucket.label} within timeouts.op_s = {self._timeout_s:g} s"
                )
            if self._failed:
                raise PartyError(self._failed)
            batch = self._ready[bucket].pop(0)
        self.wait_s += time.perf_counter() - started
        if batch.index != index:
            raise PartyError(f"dealer material out of order: {batch.label}, expected {pool_label(bucket, index)}")
        self._current, self._position = batch, 0
        if not self.requester:
            return
        try:
            self._send(m.Refill(bucket.rows, bucket.seq))
        except OSError as exc:
            raise PartyError(f"the dealer is gone ({exc})") from None

    def stop(self) -> None:
        """Stop pinging (the connection is about to be closed)."""
        self._closed.set()

    def bye(self) -> None:
        """Stop pinging and tell the dealer this party is done (party 0: the dealer
        reads no other party's connection)."""
        self._closed.set()
        if not self.requester:
            return
        try:
            self._send(m.Bye())
        except OSError:
            pass
