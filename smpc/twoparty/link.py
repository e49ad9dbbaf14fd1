"""The other party, as the offline phase talks to it: bytes both ways at once.

Every step of the two-party preprocessing is symmetric (each party is the OT receiver
of one direction and the sender of the other), so each message is an exchange: send
ours, receive theirs, of a size both sides know in advance. It runs over CrypTen's
communicator of the moment (gloo, or the TLS mesh), so it is bounded by timeouts.op_s
as every other wait, and a message of the wrong size is refused by the transport.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc.errors import PartyError


class Link:
    """This party's side of the two-party channel; `peer` names the other in errors."""

    def __init__(self, communicator: Any = None, peer: str | None = None) -> None:
        if communicator is None:
            import crypten.communicator as comm

            communicator = comm.get()
        if communicator.get_world_size() != 2:
            raise ValueError(f"two-party preprocessing needs exactly 2 parties, got {communicator.get_world_size()}")
        self.comm = communicator
        self.rank: int = communicator.get_rank()
        self.other = 1 - self.rank
        self.peer = peer or f"party {self.other}"
        self.bytes_sent = 0
        self.rounds = 0

    def exchange(self, ours: bytes | np.ndarray, theirs: int) -> bytes:
        """Send `ours`, receive `theirs` bytes from the other party (one round)."""
        out = torch.from_numpy(np.frombuffer(ours, dtype=np.uint8).copy())
        buffer = torch.empty(theirs, dtype=torch.uint8)
        sent = self.comm.isend(out, self.other)
        received = self.comm.irecv(buffer, src=self.other)
        sent.wait()
        received.wait()
        self.bytes_sent += out.numel()
        self.rounds += 1
        return buffer.numpy().tobytes()

    def refused(self, step: str, problem: Exception) -> PartyError:
        """The error for a message of the other party that `step` cannot take."""
        return PartyError(f"{self.peer} broke the protocol in the two-party preprocessing ({step}): {problem}")
