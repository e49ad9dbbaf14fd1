"""Run a function in N real party processes joined over gloo, with bounded waits.

Each party is a spawned process (fresh interpreter, so it exercises the compat
layer on import). Results come back through a queue; a party that raises sends
its traceback, and one that dies without reporting counts as a failure.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import socket
import time
import traceback
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn, rank, world_size, port, args, results) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        from smpc import session

        names = [f"p{r}" for r in range(world_size)]
        with session.joined(rank, names, "127.0.0.1", port, 30, 30):
            value = fn(rank, world_size, *args)
        # plain pickle bytes: the queue's own pickler would pass tensors through shared
        # memory that vanishes when this process exits
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_parties(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 120) -> list[Any]:
    """Call fn(rank, world_size, *args) in each of `world_size` joined parties.

    Returns the per-rank return values; raises AssertionError with every party's
    traceback (or its exit code, if it died without reporting) on any failure.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(fn, r, world_size, port, args, results)) for r in range(world_size)]
    for p in procs:
        p.start()
    got: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < world_size and time.monotonic() < deadline:
            try:
                rank, status, value = results.get(timeout=0.2)
                got[rank] = (status, value)
                if status == "error":
                    break
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in got]
                if dead:
                    time.sleep(0.5)  # a last report may still be in the queue
                    while not results.empty():
                        rank, status, value = results.get_nowait()
                        got[rank] = (status, value)
                    for r in dead:
                        got.setdefault(r, ("died", f"exit code {procs[r].exitcode} without a report"))
                    break
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
    problems = [f"party {r}: {v}" for r, (s, v) in sorted(got.items()) if s != "ok"]
    missing = [r for r in range(world_size) if r not in got]
    if problems or missing:
        if missing and not problems:
            problems.append(f"parties {missing} did not finish within {timeout} s")
        raise AssertionError("\n".join(problems))
    return [pickle.loads(got[r][1]) for r in range(world_size)]
