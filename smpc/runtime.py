"""The runtime of a party process: how it computes on shares (one frozen set of protocol
settings) and the session it computes in. MPyC's Runtime is the model (one object,
started, used, shut down, handed to the code that needs it), without its size:

    runtime = Runtime(ProtocolSettings.of(config, provider))
    with runtime.joined(rank, names, addresses, connect_s, op_s, tls=..., log=...):
        ...  # CrypTen computes with these settings, over this session's communicator

The layers underneath, in import order: the patches and the communicator (smpc.compat,
imported first: it is what makes CrypTen importable), the protocol switches
(smpc.protocols.switches), the roll call and collective helpers (smpc.session).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from smpc import compat, errors, session
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
    comparisons: Literal["circuits", "fss"] = "circuits"
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
    """One process's runtime: its protocol settings, and the session it joins."""

    def __init__(self, settings: ProtocolSettings = ProtocolSettings()) -> None:
        self.settings = settings

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
        """Join the parties for the duration of the block, and always leave.

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
        if tls is None:
            host, port = addresses[0]
            store = session.roll_call(rank, names, host, port, connect_timeout_s)
            self.configure()
            compat.init_communicator(
                rank, len(names), f"tcp://{host}:{port}", connect_timeout_s, op_timeout_s, store=store
            )
            try:
                yield
            except BaseException as exc:
                errors.mark_failure(exc)
                raise
            finally:
                compat.shutdown_communicator()
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
        communicator = transport.TlsCommunicator(rank, names, peers)
        self.configure()
        try:
            with communicator.joining(deadline, connect_timeout_s):  # the keys' exchange ends the join
                compat.install_communicator(communicator)
            yield
        except BaseException as exc:
            errors.mark_failure(exc)
            raise
        finally:
            communicator.close()
            compat.uninstall_communicator()
