"""CrypTen's communication over mutually authenticated TLS 1.3, in place of gloo.

Every pair of parties shares one TLS connection: the higher rank connects to the lower
one's config address. Both present certificates from the consortium CA, and a
connection is kept only if the peer's certificate names the party it claims to be, at
the rank the config gives it (the client checks the server's name; the server checks
the client's certificate against its HELLO). Unknown or mismatched peers are refused
and logged. Messages use smpc's wire format (no pickle); a reader thread per peer
queues incoming tensors, so sends never wait on the other side's reads. Bytes and
rounds are counted per peer.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable, Iterator, Sequence

import torch
from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from crypten.communicator.communicator import Communicator

from smpc import wire
from smpc.duplex import Duplex
from smpc.errors import PartyError, no_show


def _trust(ctx: ssl.SSLContext, ca: Path, crl: Path | None) -> None:
    # the consortium CA, and its revocation list when there is one: OpenSSL then refuses a
    # peer whose certificate the CA has revoked (checked for the peer's own certificate)
    ctx.load_verify_locations(ca)
    if crl is not None:
        ctx.load_verify_locations(crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(ca: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    """TLS 1.3 server side: our certificate, and a client certificate from the CA (not
    revoked by `crl`) is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    _trust(ctx, ca, crl)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, cert: Path, key: Path, crl: Path | None = None) -> ssl.SSLContext:
    """TLS 1.3 client side: our certificate; the server's must come from the CA, name the
    peer and not be revoked by `crl`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    _trust(ctx, ca, crl)
    ctx.check_hostname = True
    return ctx


def peer_name(sock: ssl.SSLSocket) -> str:
    """The common name of the peer's (verified) certificate."""
    cert = sock.getpeercert() or {}
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", cert.get("subject", ()))  # RDNs of (key, value)
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


MAX_MESSAGE_BYTES = 1 << 30  # one tensor from a peer; a longer header is refused before its body
MAX_QUEUED_BYTES = 256 << 20  # received and not yet used: past this the reader pauses (TCP slows the peer)


class _Counting:
    """The socket as the reader reads it: counts the bytes of the message under way (and
    when the last of them came), so a peer that stops in the middle of a message is told
    apart from one that sends nothing, or one whose message is arriving right now."""

    def __init__(self, sock: wire.Readable) -> None:
        self.sock, self.partial, self.progress = sock, 0, time.monotonic()

    def recv_into(self, view: memoryview, n: int) -> int:
        k = self.sock.recv_into(view, n)
        self.partial += k
        self.progress = time.monotonic()
        return k


class Peer:
    """One authenticated connection: a reader thread queues what arrives.

    Nothing a peer sends can crash, grow or hang this party: frames are checked by the
    wire decoder (kind, dtype, length within MAX_MESSAGE_BYTES, allocated as the bytes
    arrive), at most MAX_QUEUED_BYTES wait unused, every wait is bounded by op_s, and a
    tensor must have the shape and dtype the receiving step expects. Any fault stops the
    party with a PartyError naming the peer and the fault.
    """

    def __init__(self, name: str, sock: socket.socket, timeout_s: float) -> None:
        self.name, self.timeout_s = name, timeout_s
        # While the session is being joined (TlsCommunicator.joining), a peer may still be
        # connecting to the others: its first message may take until this deadline.
        self.joining: tuple[float, float] | None = None  # (deadline on time.monotonic, connect_s)
        # CrypTen's rounds are many small messages: without this, Nagle's algorithm
        # and delayed ACKs add tens of milliseconds to each one
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # the reader waits for ever; waits are bounded in recv()
        self.sock = Duplex(sock)  # read by the reader thread while the protocol sends
        self.inbox: queue.Queue[torch.Tensor | Exception] = queue.Queue()
        self.send_lock = threading.Lock()
        self.bytes_sent = 0
        self.messages_sent = 0
        self._stream = _Counting(self.sock)
        self._queued = 0
        self._room = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                with self._room:  # the receiving side never waits on a full inbox: no deadlock
                    self._room.wait_for(lambda: self._queued <= MAX_QUEUED_BYTES)
                self._stream.partial = 0
                msg = wire.recv(self._stream, MAX_MESSAGE_BYTES)
                if msg.kind != wire.Kind.DATA:
                    raise wire.WireError(f"sent a {msg.kind.name} message in the middle of a run")
                with self._room:
                    self._queued += msg.tensor.nbytes
                self.inbox.put(msg.tensor)
        except Exception as exc:  # whatever it is, the party stops on it rather than hanging
            self.inbox.put(exc)

    def _next(self) -> torch.Tensor | Exception:
        # Waits op_s. While joining, a peer that has not started a message may take until
        # the join's deadline; one that stopped in the middle of a message is still a
        # fault op_s after its last byte (not after this wait began: a message whose first
        # bytes came a moment before the check is arriving, not stopped).
        if self.joining is None:
            return self.inbox.get(timeout=self.timeout_s)
        started = time.monotonic()
        while True:
            try:
                return self.inbox.get(timeout=min(1.0, self.timeout_s))
            except queue.Empty:
                now = time.monotonic()
                if self._stream.partial:
                    limit = max(started, self._stream.progress) + self.timeout_s
                else:
                    limit = max(started + self.timeout_s, self.joining[0])
                if now >= limit:
                    raise

    def send(self, tensor: torch.Tensor) -> None:
        with self.send_lock:
            try:
                self.bytes_sent += wire.send(self.sock, wire.Kind.DATA, tensor)
            except OSError as exc:  # a peer that vanished is named, as on the receiving side
                raise PartyError(f"connection to party {self.name} lost: {exc}") from None
            self.messages_sent += 1

    def recv(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """The next tensor from this peer; `like` gives the shape and dtype it must have."""
        try:
            item = self._next()
        except queue.Empty:
            partial = self._stream.partial
            if partial:
                raise PartyError(
                    f"party {self.name} stopped in the middle of a message ({partial} bytes of it arrived) "
                    f"and sent nothing more within timeouts.op_s = {self.timeout_s:g} s"
                ) from None
            if self.joining is not None:
                raise PartyError(
                    f"party {self.name} did not finish joining within timeouts.connect_s = {self.joining[1]:g} s"
                ) from None
            raise PartyError(f"party {self.name} sent nothing within timeouts.op_s = {self.timeout_s:g} s") from None
        if isinstance(item, Exception):
            self.inbox.put(item)  # every later receive fails the same way
            if isinstance(item, PartyError):
                raise item
            if isinstance(item, (wire.ConnectionClosed, OSError)):
                raise PartyError(f"connection to party {self.name} lost: {item}")
            raise PartyError(f"party {self.name} broke the protocol: {wire.one_line(item)}")
        with self._room:
            self._queued -= item.nbytes
            self._room.notify()
        if like is not None and (item.shape != like.shape or item.dtype != like.dtype):
            fault = PartyError(
                f"party {self.name} broke the protocol: sent a {item.dtype} tensor of shape {list(item.shape)} "
                f"where a {like.dtype} tensor of shape {list(like.shape)} was expected"
            )
            self.inbox.put(fault)
            raise fault
        return item


class _Done:
    def wait(self) -> None:
        return None


class _Receive:
    def __init__(self, fill: Callable[[], object]) -> None:
        self._fill = fill

    def wait(self) -> None:
        self._fill()


_COMBINE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "SUM": torch.add,
    "BXOR": torch.bitwise_xor,
}


def _combine_name(op: Any) -> str:
    name = str(getattr(op, "name", op)).split(".")[-1].upper()
    if name not in _COMBINE:
        raise ValueError(f"reduction {op} is not supported over TLS")
    return name


class TlsCommunicator(Communicator):  # type: ignore[misc]  # CrypTen is untyped: its base class is Any
    """CrypTen's Communicator interface over authenticated TLS connections."""

    def __init__(self, rank: int, names: Sequence[str], peers: dict[int, Peer]) -> None:
        self.rank, self.names, self.peers = rank, list(names), peers
        self._name = names[rank]
        self.reset_communication_stats()

    # identity
    def get_world_size(self) -> int:
        return len(self.names)

    def get_rank(self) -> int:
        return self.rank

    def get_name(self) -> str:
        return self._name

    def set_name(self, name: str) -> None:
        self._name = name

    # stats: real bytes on the wire (headers included), one round per collective call
    def reset_communication_stats(self) -> None:
        self.comm_rounds, self.comm_bytes, self.comm_time = 0, 0, 0.0
        for peer in getattr(self, "peers", {}).values():
            peer.bytes_sent = peer.messages_sent = 0

    def get_communication_stats(self) -> dict[str, Any]:
        self.comm_bytes = sum(p.bytes_sent for p in self.peers.values())
        return {"rounds": self.comm_rounds, "bytes": self.comm_bytes, "time": self.comm_time}

    @contextlib.contextmanager
    def joining(self, deadline: float, connect_timeout_s: float) -> Iterator[None]:
        """Inside the block (the first exchange of the session, its keys), a peer's first
        message may take until `deadline` (time.monotonic) rather than op_s: a peer that
        connected to us may still be connecting to the others, and is still joining."""
        for peer in self.peers.values():
            peer.joining = (deadline, connect_timeout_s)
        try:
            yield
        finally:
            for peer in self.peers.values():
                peer.joining = None

    def bytes_per_peer(self) -> dict[str, int]:
        return {p.name: p.bytes_sent for p in self.peers.values()}

    def _round(self, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.comm_rounds += 1
            self.comm_time += time.perf_counter() - started

    def _others(self) -> list[int]:
        return [r for r in range(len(self.names)) if r != self.rank]

    # point to point
    def send(self, tensor: torch.Tensor, dst: int) -> None:
        self._round(lambda: self.peers[dst].send(tensor))

    def recv(self, tensor: torch.Tensor, src: Any = None) -> torch.Tensor:
        result: torch.Tensor = self._round(lambda: tensor.copy_(self.peers[src].recv(tensor)))
        return result

    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:
        self.peers[dst].send(tensor)
        return _Done()

    def irecv(self, tensor: torch.Tensor, src: Any = None) -> _Receive:
        return _Receive(lambda: tensor.copy_(self.peers[src].recv(tensor)))

    # collectives: everyone sends first (readers absorb it), then receives
    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:
        tensors = input if batched else [input]

        def run() -> Any:
            if self.rank == src:
                for r in self._others():
                    for t in tensors:
                        self.peers[r].send(t)
            else:
                for t in tensors:
                    t.copy_(self.peers[src].recv(t))
            return input

        return self._round(run)

    def _reduce(self, input: Any, op: Any, batched: bool, to: list[int]) -> Any:
        tensors = input if batched else [input]
        combine = _COMBINE[_combine_name(op)]
        results = [t.clone() for t in tensors]
        if self.rank not in to:
            for r in to:
                for t in tensors:
                    self.peers[r].send(t)
            return None
        for r in to:
            if r != self.rank:
                for t in tensors:
                    self.peers[r].send(t)
        for r in self._others():
            for i in range(len(results)):
                results[i] = combine(results[i], self.peers[r].recv(results[i]))
        return results if batched else results[0]

    def all_reduce(self, input: Any, op: Any = torch.distributed.ReduceOp.SUM, batched: bool = False) -> Any:
        return self._round(lambda: self._reduce(input, op, batched, list(range(len(self.names)))))

    def reduce(self, input: Any, dst: int, op: Any = torch.distributed.ReduceOp.SUM, batched: bool = False) -> Any:
        return self._round(lambda: self._reduce(input, op, batched, [dst]))

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        def run() -> list[torch.Tensor]:
            for r in self._others():
                self.peers[r].send(tensor)
            return [tensor.clone() if r == self.rank else self.peers[r].recv(tensor) for r in range(len(self.names))]

        result: list[torch.Tensor] = self._round(run)
        return result

    def gather(self, tensor: torch.Tensor, dst: int) -> list[torch.Tensor | None]:
        def run() -> list[torch.Tensor | None]:
            if self.rank != dst:
                self.peers[dst].send(tensor)
                return [None]
            return [tensor.clone() if r == self.rank else self.peers[r].recv(tensor) for r in range(len(self.names))]

        result: list[torch.Tensor | None] = self._round(run)
        return result

    def scatter(self, scatter_list: list[torch.Tensor], src: int, size: Any = None, device: Any = None) -> torch.Tensor:
        def run() -> torch.Tensor:
            if self.rank == src:
                for r in self._others():
                    self.peers[r].send(scatter_list[r])
                return scatter_list[self.rank].clone()
            return self.peers[src].recv()

        result: torch.Tensor = self._round(run)
        return result

    def barrier(self) -> None:
        self.all_reduce(torch.zeros(1, dtype=torch.long))

    # objects would need pickle: never over the network
    def send_obj(self, obj: Any, dst: int, group: Any = None) -> None:
        raise RuntimeError("smpc does not send pickled objects between parties")

    recv_obj = broadcast_obj = send_obj

    def close(self) -> None:
        for peer in self.peers.values():
            try:
                peer.sock.close()
            except OSError:
                pass


HANDSHAKE_S = 10.0  # a connection must finish TLS and say who it is within this
MAX_PENDING_HANDSHAKES = 64


def accept_handshakes(
    listener: socket.socket,
    handshake: Callable[[socket.socket, tuple[Any, ...]], None],
    done: Callable[[], bool],
    deadline: float,
    refused: Callable[[str, str], None],
) -> None:
    """Accept connections until `done()` or `deadline` (time.monotonic), each handed to
    `handshake(raw, address)` in its own thread with a timeout of HANDSHAKE_S.

    A stranger that says nothing (or garbage) costs one handshake timeout on its own
    connection, never a real peer's turn; at most MAX_PENDING_HANDSHAKES run at once (a
    flood is refused, memory stays bounded). A handshake that raises a TLS, wire or
    socket error is reported as `refused(address, reason)` and its socket closed.
    """
    pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)

    def run(raw: socket.socket, address: tuple[Any, ...]) -> None:
        try:
            raw.settimeout(max(1.0, min(HANDSHAKE_S, deadline - time.monotonic())))
            handshake(raw, address)
        except (ssl.SSLError, wire.WireError, OSError, ValueError, AttributeError) as exc:
            # once accepting is over, the process may be exiting: a daemon thread that
            # writes then can abort the interpreter's shutdown (SIGABRT), so it stays quiet
            if not done():
                refused(address[0], wire.one_line(exc))
            raw.close()
        finally:
            pending.release()

    while not done() and time.monotonic() < deadline:
        listener.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
        try:
            raw, address = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        if not pending.acquire(blocking=False):
            refused(address[0], "too many handshakes under way")
            raw.close()
            continue
        threading.Thread(target=run, args=(raw, address), daemon=True).start()


def connect_mesh(
    rank: int,
    names: Sequence[str],
    addresses: Sequence[tuple[str, int]],
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    connect_timeout_s: float,
    op_timeout_s: float,
    log: Callable[[str, str], None] = lambda event, line: print(line),
) -> dict[int, Peer]:
    """Open an authenticated connection to every other party.

    Lower ranks listen at their config address, higher ranks connect. Returns the
    peers by rank; raises PartyError naming the parties missing after the timeout.
    Each connection event goes to `log(event, line)`: event "peer" (one verified and
    accepted) or "refused" (a connection turned away), and a line for the log.
    """
    deadline = time.monotonic() + connect_timeout_s
    peers: dict[int, Peer] = {}
    lock = threading.Lock()
    failure: list[str] = []
    expect_from = [r for r in range(len(names)) if r > rank]

    def refused(address: str, reason: str) -> None:
        log("refused", f"refused a connection from {address}: {reason}")

    def handshake(raw: socket.socket, address: tuple[Any, ...]) -> None:
        tls = server_ctx.wrap_socket(raw, server_side=True)
        hello = wire.expect(tls, wire.Kind.HELLO, limit=1 << 12).json()
        claimed, claimed_rank, proven = str(hello.get("party")), hello.get("rank"), peer_name(tls)
        with lock:
            taken = claimed_rank in peers
        if claimed_rank not in expect_from or names[claimed_rank] != claimed or proven != claimed or taken:
            refused(address[0], f"certificate of {proven!r}, claims {claimed!r} at rank {claimed_rank}")
            tls.close()
            return
        log("peer", f"peer {claimed} connected from {address[0]} (certificate verified)")
        with lock:
            peers[claimed_rank] = Peer(claimed, tls, op_timeout_s)

    def joined() -> bool:
        with lock:
            return all(r in peers for r in expect_from)

    listener = None
    acceptor = None
    if expect_from:
        host, port = addresses[rank]
        try:
            listener = socket.create_server((host, port))
        except OSError as exc:
            raise PartyError(f"{names[rank]}: cannot listen on {host}:{port}: {exc.strerror}") from None
        acceptor = threading.Thread(
            target=accept_handshakes, args=(listener, handshake, joined, deadline, refused), daemon=True
        )
        acceptor.start()
    try:
        for r in range(rank):
            host, port = addresses[r]
            while True:
                try:
                    raw = socket.create_connection((host, port), timeout=max(0.5, deadline - time.monotonic()))
                    tls = client_ctx.wrap_socket(raw, server_hostname=names[r])
                    wire.send_json(tls, wire.Kind.HELLO, {"party": names[rank], "rank": rank})
                    log("peer", f"connected to peer {names[r]} at {host}:{port} (certificate verified)")
                    peers[r] = Peer(names[r], tls, op_timeout_s)
                    break
                except ssl.SSLCertVerificationError as exc:
                    raise PartyError(f"{host}:{port} is not party {names[r]}: {exc.verify_message}") from None
                except (OSError, ssl.SSLError):
                    if time.monotonic() > deadline:
                        failure.append(names[r])
                        break
                    time.sleep(0.2)
        if acceptor is not None:
            acceptor.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    finally:
        if listener is not None:
            listener.close()
    missing = [names[r] for r in range(len(names)) if r != rank and r not in peers]
    if missing:
        for peer in peers.values():
            peer.sock.close()
        raise no_show(missing, "did not join", connect_timeout_s)
    return peers
