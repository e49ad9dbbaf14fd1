"""The runtime of a party process: how it computes on shares (one frozen set of protocol
settings), the session it computes in, and the meters of what that session spends.
MPyC's Runtime is the model (one object, started, used, shut down, handed to the code
that needs it), without its size:

    runtime = Runtime(ProtocolSettings.of(config, provider))
    with runtime.joined(rank, names, addresses, connect_s, op_s, tls=..., log=...):
        ...  # CrypTen computes with these settings, over this session's communicator
    runtime.meter.layers(), runtime.protocol_meter.record()  # what the session spent

The layers underneath, in import order (each imports only those before it): the patches
(smpc.compat, imported first: it is what makes CrypTen importable), the fixed-point
helpers (smpc.fixed_point), the communicator (smpc.communicator), the protocols and their
switches (smpc.protocols), then the roll call and collectives (smpc.session) and the
meters (smpc.meter, a leaf: the protocols book to the meters the runtime activates).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from smpc import communicator, compat, errors, meter, session
from smpc.meter import LayerMeter, ProtocolMeter
from smpc.protocols import switches

if TYPE_CHECKING:
    from smpc.config import Config


@dataclass(frozen=True)
class ProtocolSettings:
    """How every party computes; all parties of a session must agree on these (the
    agreement check compares them before anyone computes)."""

    precision_bits: int = 16  # fixed-point fractional bits
    provider: str = "TFP"  # CrypTen's tuple provider: "TFP" (local, simulation) or the dealer's
    # CrypTen's approximation settings (crypten.cfg.functions), as sorted (key, value) pairs
    functions: tuple[tuple[str, Any], ...] = field(default=())
    comparisons: Literal["circuits", "fss", "ot"] = "circuits"
    truncation: Literal["local", "dealer"] = "local"  # the two-party truncation

    @classmethod
    def of(cls, config: Config, provider: str) -> ProtocolSettings:
        """The settings `config` resolves to, with `provider` (the dealer's, or "TFP")."""
        protocol = config.protocol
        return cls(
            precision_bits=protocol.precision_bits,
            provider=provider,
            functions=tuple(sorted(protocol.functions.model_dump().items())),
            comparisons=protocol.comparisons,
            truncation=config.plan.truncation,
        )


class Runtime:
    """One process's runtime: its protocol settings, the session it joins, and the meters
    that book what the session spends (fresh for each session)."""

    def __init__(self, settings: ProtocolSettings = ProtocolSettings()) -> None:
        compat.apply()  # idempotent: importing smpc.compat has already patched CrypTen
        self.settings = settings
        self.meter = LayerMeter()
        self.protocol_meter = ProtocolMeter()

    def configure(self) -> None:
        """Put the settings in place in CrypTen (precision, provider, approximations, the
        comparison and truncation protocols): what a process that computes without a
        session (the dealer's shape-only run) needs."""
        s = self.settings
        switches.configure(s.precision_bits, s.provider, dict(s.functions), s.comparisons, s.truncation)

    @contextlib.contextmanager
    def joined(
        self,
        rank: int,
        names: Sequence[str],
        addresses: Sequence[tuple[str, int]],
        connect_timeout_s: float = 60.0,
        op_timeout_s: float = 30.0,
        tls: tuple[Path, Path, Path] | None = None,
        log: Callable[[str, str], None] | None = None,
    ) -> Iterator[None]:
        """Join the parties for the duration of the block, and always leave. The meters
        are fresh and active inside the block: they count from the session's start.

        Args:
            rank: this party's rank (its index in `names`).
            names: every party's name, in rank order.
            addresses: every party's (host, port); over gloo only the first is used
                (its TCP store is the rendezvous).
            connect_timeout_s: bound on waiting for every party to join.
            op_timeout_s: bound on every later communication step.
            tls: (CA, own certificate, own key) to talk over mutually authenticated TLS
                instead of gloo.
            log: where TLS connection events go: log(event, line), event "peer" or "refused".
        """
        with self._session(rank, names, addresses, connect_timeout_s, op_timeout_s, tls, log):
            self.meter, self.protocol_meter = LayerMeter(), ProtocolMeter()
            meter.activate(self.meter, self.protocol_meter)
            try:
                yield
            except BaseException as exc:
                errors.mark_failure(exc)
                raise
            finally:
                meter.activate(None)

    @contextlib.contextmanager
    def _session(
        self,
        rank: int,
        names: Sequence[str],
        addresses: Sequence[tuple[str, int]],
        connect_timeout_s: float,
        op_timeout_s: float,
        tls: tuple[Path, Path, Path] | None,
        log: Callable[[str, str], None] | None,
    ) -> Iterator[None]:
        # CrypTen's communicator for the block: gloo (rendezvous on smpc's roll call), or
        # the TLS mesh; either way the session's keys are exchanged before it is used
        if tls is None:
            host, port = addresses[0]
            store = session.roll_call(rank, names, host, port, connect_timeout_s)
            self.configure()
            with communicator.gloo(
                rank, len(names), f"tcp://{host}:{port}", connect_timeout_s, op_timeout_s, store=store
            ):
                yield
            return
        from smpc import transport

        deadline = time.monotonic() + connect_timeout_s
        peers = transport.connect_mesh(
            rank,
            names,
            addresses,
            transport.server_context(*tls),
            transport.client_context(*tls),
            connect_timeout_s,
            op_timeout_s,
            log=log or (lambda event, line: print(line, flush=True)),
        )
        mesh = transport.TlsCommunicator(rank, names, peers)
        self.configure()
        try:
            with contextlib.ExitStack() as stack:
                with mesh.joining(deadline, connect_timeout_s):  # the keys' exchange ends the join
                    stack.enter_context(communicator.installed(mesh))
                yield
        finally:
            mesh.close()
