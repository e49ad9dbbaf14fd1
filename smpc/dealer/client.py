"""What a party uses to talk to the dealer: check in, take its key, read its material, leave.

Parties never touch the dealer's sockets or message kinds themselves: `DealerClient`
checks in (retrying until timeouts.connect_s), keeps the connection when this party
reads material (party 0's corrections; with comparisons: fss, every party's keys), opens
the stream of a one-off run or the pool of a service on it, and says goodbye (or why
it stops) at the end.
"""

from __future__ import annotations

import socket
import ssl
import time

from smpc import wire
from smpc.config import Config
from smpc.dealer import messages as m
from smpc.dealer.material import Binding
from smpc.dealer.streams import MaterialPool, MaterialStream
from smpc.duplex import Duplex
from smpc.errors import PartyError


def material_receivers(config: Config) -> tuple[int, ...]:
    """The parties that read material from the dealer during a run: party 0 (its
    corrections), and with comparisons: fss every party (its FSS keys)."""
    return tuple(range(len(config.parties))) if config.protocol.comparisons == "fss" else (0,)


def tls_contexts(config: Config, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts of `name` ("dealer" or a party) for transport: tls."""
    from smpc import transport

    files = config.tls_files(name)
    return transport.server_context(*files), transport.client_context(*files)


class DealerClient:
    """A party's connection to the dealer of `config` (see `check_in`)."""

    def __init__(self, config: Config, rank: int, seed: bytes, sock: socket.socket | None) -> None:
        self.config = config
        self.rank = rank
        self.name = config.parties[rank].name
        self.seed = seed  # the 256-bit key this party shares with the dealer
        self._sock: socket.socket | Duplex | None = sock
        self.stream: MaterialStream | None = None
        self.pool: MaterialPool | None = None

    @classmethod
    def check_in(cls, config: Config, rank: int, fields: dict[str, str]) -> DealerClient:
        """Check in with the dealer (retrying until timeouts.connect_s) and take this party's key."""
        sock = _connect(config, config.parties[rank].name)
        name = config.parties[rank].name
        try:
            m.send(sock, m.CheckIn(name, rank, fields))
            sock.settimeout(config.timeouts.connect_s)  # the dealer answers once everyone is there
            seed = m.expect(sock, m.Seed).key
            sock.settimeout(config.timeouts.op_s)
        except (wire.WireError, OSError) as exc:
            sock.close()
            raise PartyError(f"dealer refused {name}: {exc}") from None
        if rank not in material_receivers(config):
            sock.close()
            return cls(config, rank, seed, None)
        return cls(config, rank, seed, sock)

    @staticmethod
    def report_abort(config: Config, rank: int, fields: dict[str, str], reason: str) -> None:
        """At a party that stops before checking in (the parties' settings differ): tell the
        dealer why, so that it stops at once naming the cause instead of waiting for it.
        Best effort, within 5 s: a dealer that cannot be reached learns it from its timeout."""
        address = _address(config)
        name = config.parties[rank].name
        deadline = time.monotonic() + min(5.0, config.timeouts.connect_s)
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(address, timeout=max(0.2, deadline - time.monotonic()))
                if config.plan.transport == "tls":
                    sock = tls_contexts(config, name)[1].wrap_socket(sock, server_hostname="dealer")
                with sock:
                    m.send(sock, m.Abort(name, rank, fields, wire.one_line(reason)))
                return
            except (OSError, ssl.SSLError):
                time.sleep(0.2)

    @property
    def reads_material(self) -> bool:
        """Whether the dealer sends this party material during the run."""
        return self._sock is not None

    def open_stream(self) -> MaterialStream | None:
        """A one-off run's material stream (not yet reading; see `start_run`), or None
        when this party reads none."""
        if self._sock is not None:
            self.stream = MaterialStream(
                self._shared(self._sock), Binding(self.seed), self.name, self.config.timeouts.op_s
            )
        return self.stream

    def start_run(self, batches: int) -> None:
        """Party 0 tells the dealer how many batches the run has; every reading party
        starts reading (then offline_done on the stream)."""
        if self.stream is None:
            return
        if self.rank == 0:
            if self._sock is None:  # a stream is opened on the socket only
                raise RuntimeError("a material stream without its dealer connection")
            m.send(self._sock, m.Start(batches))
        self.stream.start()

    def open_pool(self) -> MaterialPool | None:
        """A service's pool of material, reading (and at party 0, asking for refills and
        pinging), or None when this party reads none."""
        if self._sock is not None:
            self.pool = MaterialPool(
                self._shared(self._sock),
                Binding(self.seed),
                self.name,
                self.config.timeouts.op_s,
                requester=self.rank == 0,
            )
            self.pool.start()
        return self.pool

    def _shared(self, sock: socket.socket | Duplex) -> Duplex:
        # from now on a background thread reads the connection while this one writes
        if not isinstance(sock, Duplex):
            sock = self._sock = Duplex(sock)
        return sock

    def close(self, bye: bool = True, reason: str | None = None) -> None:
        """Tell the dealer this party is done (a dealer gone by now no longer matters);
        without `bye`, hang up, first telling it `reason` (why this party stops)."""
        if self._sock is None:
            return
        if self.pool is not None:
            self.pool.bye() if bye else self.pool.stop()
        elif bye or reason is not None:
            try:
                self._sock.settimeout(1.0)
                m.send(self._sock, m.Bye() if bye else m.Error(wire.one_line(reason)))
            except OSError:
                pass
        self._sock.close()
        self._sock = None
        self.pool = None


def _address(config: Config) -> tuple[str, int]:
    if config.dealer is None:  # the validation requires the dealer section with randomness: dealer
        raise RuntimeError("randomness: dealer without a dealer section")
    return (config.dealer.host, config.dealer.port)


def _connect(config: Config, name: str) -> socket.socket:
    address = _address(config)
    deadline = time.monotonic() + config.timeouts.connect_s
    client_ctx = tls_contexts(config, name)[1] if config.plan.transport == "tls" else None
    while True:
        try:
            sock = socket.create_connection(address, timeout=config.timeouts.op_s)
            return client_ctx.wrap_socket(sock, server_hostname="dealer") if client_ctx is not None else sock
        except ssl.SSLCertVerificationError as exc:
            raise PartyError(f"{address[0]}:{address[1]} is not the dealer: {exc.verify_message}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise PartyError(
                    f"the dealer at {address[0]}:{address[1]} did not answer within timeouts.connect_s = "
                    f"{config.timeouts.connect_s:g} s"
                ) from None
            time.sleep(0.2)
