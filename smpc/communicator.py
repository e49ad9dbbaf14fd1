"""The communicator CrypTen computes over in this process, for the length of a block:
CrypTen's own over gloo (its waits bounded), one of smpc's put in its place (the TLS
mesh, seeded as crypten.init seeds gloo), or the dealer's shape-only stand-in.

CrypTen can only build its own gloo communicator, and every CrypTen module reaches the
communicator through crypten.communicator.get() at call time: replacing that function
reaches all of them. Each block undoes what it did, so no state outlives it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
import crypten
import crypten.communicator as comm
import crypten.communicator.distributed_communicator as dc


@contextlib.contextmanager
def substituted(communicator: Any) -> Iterator[None]:
    """crypten.communicator.get() returns `communicator` inside the block: the dealer runs
    a computation with shape-only communication this way."""
    original = comm.get
    comm.get = lambda: communicator
    try:
        yield
    finally:
        comm.get = original


@contextlib.contextmanager
def installed(communicator: Any) -> Iterator[None]:
    """`communicator` is CrypTen's for this process inside the block, its generators
    seeded through it first (the keys' exchange that crypten.init performs over gloo)."""
    original = (comm.get, comm.is_initialized)
    comm.get = lambda: communicator
    comm.is_initialized = lambda: True
    try:
        crypten._setup_prng()  # smpc's, in place of CrypTen's (smpc.compat)
        yield
    finally:
        comm.get, comm.is_initialized = original


@contextlib.contextmanager
def gloo(
    rank: int,
    world_size: int,
    rendezvous: str,
    connect_timeout_s: float = 60.0,
    op_timeout_s: float = 30.0,
    store: Any = None,
) -> Iterator[None]:
    """Inside the block, this process is `rank` of CrypTen's gloo process group (with the
    settings that smpc.protocols.switches.configure made); it leaves on exit.

    Args:
        rank: this party's rank, 0..world_size-1.
        world_size: number of computing parties.
        rendezvous: torch.distributed init method, e.g. ``tcp://127.0.0.1:29610``
            (ignored when `store` is given).
        connect_timeout_s: bound on waiting for all parties to join.
        op_timeout_s: bound on every later communication step.
        store: an already-joined torch.distributed store to rendezvous on.
    """
    dist: compat._DistWithTimeout = dc.dist
    dist.connect_timeout = datetime.timedelta(seconds=connect_timeout_s)
    dist.group_timeout = datetime.timedelta(seconds=op_timeout_s)
    dist.store = store
    os.environ.update(
        RENDEZVOUS=rendezvous,
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        DISTRIBUTED_BACKEND="gloo",
    )
    try:
        crypten.cfg.communicator.verbose = True  # counts rounds and bytes
        crypten.init()
        yield
    finally:
        if crypten.is_initialized():
            crypten.uninit()
        dist.connect_timeout = dist.group_timeout = dist.store = None
