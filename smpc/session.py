"""One party's view of a joint computation: join, share, compute, reveal, leave.

All functions here are collective: every party calls them in the same order with
the same public arguments (shapes, source ranks); only the owner's values matter.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import crypten
import torch

from smpc import compat
from smpc.convert import Program


@contextlib.contextmanager
def joined(
    rank: int,
    world_size: int,
    rendezvous: str,
    connect_timeout_s: float = 60.0,
    op_timeout_s: float = 60.0,
    precision_bits: int = 16,
) -> Iterator[None]:
    """Join the parties for the duration of the block, and always leave.

    Args:
        rank: this party's rank.
        world_size: number of computing parties.
        rendezvous: ``tcp://host:port`` of the first party.
        connect_timeout_s: bound on waiting for every party to join.
        op_timeout_s: bound on every later communication step.
        precision_bits: fixed-point precision (all parties must agree).
    """
    compat.init_communicator(rank, world_size, rendezvous, connect_timeout_s, op_timeout_s, precision_bits)
    try:
        yield
    finally:
        compat.shutdown_communicator()


def rank() -> int:
    """This party's rank in the joined group."""
    return crypten.communicator.get().get_rank()


def broadcast_int(value: int | None, src: int) -> int:
    """Public integer from party `src` to all (e.g. how many samples there are)."""
    t = torch.tensor([value if rank() == src else 0], dtype=torch.long)
    return int(crypten.communicator.get().broadcast(t, src).item())


def share_parameters(program: Program, owner: int) -> dict[str, crypten.CrypTensor]:
    """Secret-share the model owner's parameters; the others contribute only shapes.

    Args:
        program: the converted model; at the owner its `secret` holds the real weights.
        owner: rank of the model owner.

    Returns:
        CrypTensors by placeholder name, in the same order at every party.
    """
    mine = rank() == owner
    return {
        name: crypten.cryptensor(value if mine else torch.zeros_like(value), src=owner)
        for name, value in sorted(program.secret.items())
    }


def share_input(values: torch.Tensor | None, shape: torch.Size, owner: int) -> crypten.CrypTensor:
    """Secret-share an input held by `owner` (`values` is ignored at the other parties)."""
    if rank() == owner:
        if values is None or tuple(values.shape) != tuple(shape):
            raise ValueError(f"input shape {None if values is None else list(values.shape)} != {list(shape)}")
        return crypten.cryptensor(values, src=owner)
    return crypten.cryptensor(torch.zeros(shape), src=owner)


def reveal(value: crypten.CrypTensor, receivers: list[int]) -> torch.Tensor | None:
    """Open `value` to each receiver only; returns the plaintext there, None elsewhere."""
    mine = None
    for dst in receivers:
        opened = value.get_plain_text(dst=dst)
        if dst == rank():
            mine = opened
    return mine


def communication_stats() -> dict[str, float]:
    """Rounds and bytes this party has sent, as counted by CrypTen (8 bytes per element)."""
    stats = crypten.communicator.get().get_communication_stats()
    return {"rounds": int(stats["rounds"]), "bytes_sent": int(stats["bytes"]), "comm_time_s": float(stats["time"])}
