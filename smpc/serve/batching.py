"""How the parties agree on each secret batch: the leader proposes, the others check.

Every round, the leader (rank 0) broadcasts a proposal: which queries (by key) and how
many rows each, in order. Every party answers, in one all-gather, with the state of
each proposed query at its end (held with the same rows, missing, or different) and
whether it wants to stop. From the same answers every party derives the same decision:
run the queries held everywhere, fail those that differ, defer those still on their way
(unless the leader marked them final). Both messages are fixed-size int64 vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IDLE, BATCH, STOP = 0, 1, 2
MISSING, HELD, DIFFERENT = 0, 1, 2


@dataclass(frozen=True)
class Item:
    """One proposed query: its key, its rows, whether this is its last chance, and its
    sequence length (0 for a model without one)."""

    key: tuple[int, int]
    rows: int
    final: bool = False
    seq: int = 0


WIDTH = 4  # int64 per proposed query: key0, key1, ±rows, seq


def proposal_size(capacity: int) -> int:
    """The length of an encoded proposal of at most `capacity` queries."""
    return 2 + WIDTH * capacity


@dataclass(frozen=True)
class Proposal:
    kind: int
    items: tuple[Item, ...] = ()

    def encode(self, capacity: int) -> torch.Tensor:
        """[kind, n, (key0, key1, ±rows, seq) * capacity]; negative rows mark a final attempt."""
        if len(self.items) > capacity:
            raise ValueError(f"{len(self.items)} queries in one proposal; at most {capacity}")
        out = torch.zeros(proposal_size(capacity), dtype=torch.long)
        out[0], out[1] = self.kind, len(self.items)
        for i, item in enumerate(self.items):
            at = 2 + WIDTH * i
            out[at : at + WIDTH] = torch.tensor([*item.key, -item.rows if item.final else item.rows, item.seq])
        return out

    @classmethod
    def decode(cls, vector: torch.Tensor, capacity: int) -> Proposal:
        values = [int(v) for v in vector.tolist()]
        kind, n = values[0], values[1]
        if kind not in (IDLE, BATCH, STOP) or not 0 <= n <= capacity or len(values) != proposal_size(capacity):
            raise ValueError(f"malformed batch proposal (kind {kind}, {n} queries)")
        items: list[Item] = []
        for i in range(n):
            key0, key1, rows, seq = values[2 + WIDTH * i : 2 + WIDTH * (i + 1)]
            if rows == 0 or seq < 0:
                raise ValueError(f"malformed batch proposal (query {i}: {rows} rows, {seq} tokens)")
            items.append(Item((key0, key1), abs(rows), rows < 0, seq))
        return cls(kind, tuple(items))


def encode_answer(stop: bool, states: list[int], capacity: int) -> torch.Tensor:
    """[stop, state of each proposed query, 0...]."""
    out = torch.zeros(1 + capacity, dtype=torch.long)
    out[0] = int(stop)
    out[1 : 1 + len(states)] = torch.tensor(states, dtype=torch.long) if states else out[1:1]
    return out


@dataclass(frozen=True)
class Decision:
    """What every party does with a proposal, by index into its items."""

    run: tuple[int, ...]
    different: tuple[int, ...]  # parties hold different queries under one key: refused everywhere
    missing: tuple[int, ...]  # a final attempt that did not reach every party
    deferred: tuple[int, ...]
    stop: bool

    def rows(self, proposal: Proposal) -> int:
        return sum(proposal.items[i].rows for i in self.run)


def decide(proposal: Proposal, answers: list[torch.Tensor]) -> Decision:
    """The same decision at every party, from the proposal and everyone's answers."""
    run, different, missing, deferred = [], [], [], []
    for i, item in enumerate(proposal.items):
        states = [int(a[1 + i]) for a in answers]
        if any(s == DIFFERENT for s in states):
            different.append(i)
        elif all(s == HELD for s in states):
            run.append(i)
        elif item.final:
            missing.append(i)
        else:
            deferred.append(i)
    stop = any(int(a[0]) for a in answers)
    return Decision(tuple(run), tuple(different), tuple(missing), tuple(deferred), stop)
