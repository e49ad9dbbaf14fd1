"""The dealer protocol's states, without I/O (as h11 keeps HTTP's): each side feeds the
typed messages it receives (smpc.dealer.messages) to a state object, which says what they
mean or raises ProtocolError; the sockets live in server.py and streams.py.

- `RollCall` (dealer): every party checks in once, under its own name and rank, with the
  dealer's settings; a party stopping before the run (ABORT) ends the roll call.
- `StreamState` (party): the dealer's material arrives batch by batch: MATERIAL items,
  then READY (a run's batches, in order) or POOLED (a service's); BYE ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from smpc import agreement
from smpc.errors import SmpcError
from smpc.dealer import messages as m
from smpc.model.buckets import Bucket


class ProtocolError(SmpcError):
    """A message that does not fit the dealer protocol's state (its text names what and why).

    A party or the dealer of another run, or of another version, reached this one:
    check the addresses and that every process runs the same smpc."""

    code = "dealer-protocol"


class RollCall:
    """The dealer's check-in: one CHECK_IN per party of `names`, with `expected` settings."""

    def __init__(self, names: list[str], expected: dict[str, str], program: Path | None = None) -> None:
        self.names = names
        self.expected = expected
        self.program = program  # the config's model.program: a difference there names the folder
        self.ranks: set[int] = set()

    @property
    def complete(self) -> bool:
        return len(self.ranks) == len(self.names)

    def missing(self) -> list[str]:
        """The parties that have not checked in yet."""
        return [n for r, n in enumerate(self.names) if r not in self.ranks]

    def receive(self, message: m.Message, address: str) -> int:
        """A party's first message, from `address`.

        Returns:
            The rank that checked in.
        Raises:
            SettingsError: its settings differ from the dealer's, or it reports that the
                parties stopped before the run (ABORT).
            Refusal: anything else than a check-in from a party still expected.
        """
        if not isinstance(message, (m.CheckIn, m.Abort)):
            raise Refusal(f"expected CHECK_IN from {address}, got {type(message).__name__.upper()}")
        name, rank = message.party, message.rank
        if name not in self.names or self.names.index(name) != rank or rank in self.ranks:
            raise Refusal(f"unexpected party {name!r} (rank {rank}) from {address}")
        if isinstance(message, m.Abort):  # the parties stopped before checking in: say why
            raise SettingsError(f"dealer: stopped before the run: {name} reports: {message.reason}")
        differs = agreement.first_difference(self.expected, message.agreement)
        if differs is not None:
            raise SettingsError(
                agreement.difference(
                    differs,
                    ("the dealer", self.expected.get(differs, "none")),
                    (name, message.agreement.get(differs, "none")),
                    self.program,
                )
            )
        self.ranks.add(rank)
        return rank


class Refusal(ProtocolError):
    """A connection that the dealer's roll call turns away: not a check-in from a party
    still expected. The roll call goes on without it.

    Check the addresses: another run's party, or a stranger, reached this dealer."""

    code = "dealer-refusal"

    def __init__(self, reason: str) -> None:
        super().__init__(f"dealer: {reason}")  # the text the party is sent
        self.reason = reason  # the text without the speaker, for the dealer's own log


class SettingsError(ProtocolError):
    """The parties' settings and the dealer's differ (or the parties found so themselves).

    Give the dealer and every party the same config and program folder (the line names
    the setting and each side's value)."""

    code = "dealer-settings"


@dataclass
class Batch:
    """One batch of material as it arrived: how it is named, the batches the dealer holds
    ahead (a run's first batch), a service batch's shape bucket and index, and the
    (tag, the reader's MAC, tensor) items."""

    label: str
    prefetch: int = 0
    bucket: Bucket | None = None
    index: int = 0
    items: list[tuple[bytes, bytes, torch.Tensor]] = field(default_factory=list)


class StreamState:
    """A party's reading of the dealer's stream (a one-off run's, or a service's pool)."""

    def __init__(self, service: bool) -> None:
        self.service = service
        self._next_batch = 0
        self._open: list[tuple[bytes, bytes, torch.Tensor]] = []
        self.ended = False

    def receive(self, message: m.Message, what: bytes = b"") -> Batch | None:
        """Feed one message (`what`: the reader's MAC of a MATERIAL item, material.Binding).
        Returns the batch a READY or POOLED closes, else None; raises ProtocolError on
        anything out of place."""
        if self.ended:
            raise ProtocolError(f"{type(message).__name__.upper()} after the dealer's BYE")
        if isinstance(message, m.Material):
            self._open.append((message.tag, what, message.tensor))
            return None
        if isinstance(message, m.Ready) and not self.service:
            if message.batch != self._next_batch:
                raise ProtocolError(f"the dealer closed batch {message.batch}, expected batch {self._next_batch}")
            self._next_batch += 1
            return self._close(Batch(run_label(message.batch), prefetch=message.prefetch, index=message.batch))
        if isinstance(message, m.Pooled) and self.service:
            bucket = Bucket(message.rows, message.seq)
            return self._close(Batch(pool_label(bucket, message.index), bucket=bucket, index=message.index))
        if isinstance(message, m.Bye):
            if self._open:
                raise ProtocolError(f"the dealer said BYE with {len(self._open)} items of an unfinished batch")
            self.ended = True
            return None
        if isinstance(message, m.Error):
            raise ProtocolError(message.message)
        raise ProtocolError(f"unexpected {type(message).__name__.upper()} in the dealer's material stream")

    def _close(self, batch: Batch) -> Batch:
        batch.items, self._open = self._open, []
        return batch


def run_label(batch: int) -> str:
    """How a one-off run's batch is named in material tags and messages."""
    return f"batch {batch}"


def pool_label(bucket: Bucket, index: int) -> str:
    """How a service's batch is named in material tags and messages."""
    return f"batch {index} of {bucket.label}"
