"""One party's view of a joint computation: the roll call, then share, compute, reveal
(joining and leaving is the runtime's: smpc.runtime.Runtime.joined).

All functions here are collective: every party calls them in the same order with
the same public arguments (shapes, source ranks); only the owner's values matter.
"""

from __future__ import annotations

import datetime
import time
from typing import Any
from collections.abc import Sequence

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
import crypten
import torch

from smpc.model.program import Program
from smpc.errors import PartyError, no_show


def roll_call(rank: int, names: Sequence[str], host: str, port: int, timeout_s: float) -> Any:
    """Wait until every party has checked in at the first party's TCP store.

    Returns the store (gloo then rendezvouses on it). Raises PartyError naming the
    parties that did not show up within `timeout_s`.
    """
    from torch.distributed import TCPStore  # type: ignore[attr-defined]  # there at run time, not re-exported in torch's stubs

    deadline = time.monotonic() + timeout_s
    try:
        store = TCPStore(
            host,
            port,
            len(names),
            is_master=rank == 0,
            timeout=datetime.timedelta(seconds=timeout_s),
            wait_for_workers=False,
        )
    except Exception as exc:  # torch raises several types for refused/unreachable stores
        if rank == 0:
            raise PartyError(f"{names[0]}: cannot listen on {host}:{port}: {str(exc).splitlines()[0]}") from None
        raise PartyError(
            f"party {names[0]} (the rendezvous at {host}:{port}) did not answer within timeouts.connect_s = {timeout_s:g} s"
        ) from None
    store.set(f"smpc/present/{rank}", names[rank])
    while True:
        missing = [name for r, name in enumerate(names) if not store.check([f"smpc/present/{r}"])]
        if not missing:
            return store
        if time.monotonic() > deadline:
            raise no_show(missing, "did not join", timeout_s)
        time.sleep(0.1)


def rank() -> int:
    """This party's rank in the joined group."""
    me: int = crypten.communicator.get().get_rank()
    return me


def broadcast_int(value: int | None, src: int) -> int:
    """Public integer from party `src` to all (e.g. how many samples there are)."""
    t = torch.tensor([value if rank() == src else 0], dtype=torch.long)
    return int(crypten.communicator.get().broadcast(t, src).item())


def broadcast_int64(values: torch.Tensor, src: int) -> torch.Tensor:
    """A public int64 vector from party `src` to all (the others pass one of the same shape)."""
    out: torch.Tensor = crypten.communicator.get().broadcast(values.long(), src)
    return out


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


def reveal(
    value: crypten.CrypTensor, receivers: list[int], entitled: Sequence[int] | None = None
) -> torch.Tensor | None:
    """Open `value` to each receiver only; returns the plaintext there, None elsewhere.

    With `entitled` (the ranks this party's config allows for these rows), the parties
    first compare what each of them was asked to reveal: if any party's request differs,
    or names a rank that is not entitled, every party refuses and nothing is opened.
    """
    if entitled is not None:
        request = torch.full((crypten.communicator.get().get_world_size(),), -1, dtype=torch.long)
        request[: len(receivers)] = torch.tensor(receivers, dtype=torch.long)
        for r, theirs in enumerate(all_gather_int64(request)):
            asked = [int(v) for v in theirs if v >= 0]
            refused = [d for d in asked if d not in entitled]
            if refused or asked != list(receivers):
                raise PartyError(
                    f"refused to reveal: party at rank {r} asked to reveal to rank(s) {asked}; "
                    f"entitled here: {sorted(entitled)}"
                )
    mine = None
    for dst in receivers:
        opened = value.get_plain_text(dst=dst)
        if dst == rank():
            mine = opened
    return mine


def communication_stats() -> dict[str, float]:
    """Rounds and bytes this party has sent: CrypTen's estimate over gloo (8 bytes per
    element), the bytes really written to the sockets over TLS."""
    stats = crypten.communicator.get().get_communication_stats()
    return {"rounds": int(stats["rounds"]), "bytes_sent": int(stats["bytes"]), "comm_time_s": float(stats["time"])}


def bytes_per_peer() -> dict[str, int] | None:
    """Bytes sent to each peer by name (TLS transport), None over gloo (it does not say)."""
    communicator = crypten.communicator.get()
    return communicator.bytes_per_peer() if hasattr(communicator, "bytes_per_peer") else None


def barrier() -> None:
    """Wait until every party reaches this point."""
    crypten.communicator.get().barrier()


def all_gather_int64(values: torch.Tensor) -> list[torch.Tensor]:
    """Every party's int64 vector of the same shape, in rank order."""
    out: list[torch.Tensor] = crypten.communicator.get().all_gather(values.long())
    return out
