"""Baseline: LeNet-5 online inference time with upstream CrypTen's own trusted third party.

The parties run exactly smpc's execution path (convert, share_parameters, share_input,
run_program, reveal); only the correlated randomness differs: it comes from CrypTen's
`TTP` provider, served by `crypten.mpc.provider.TTPServer` in one extra process.

    python benchmarks/upstream_ttp.py
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import pickle
import queue
import time
import traceback
from typing import Any


def _join(rank: int, world_size: int, port: int, timeout_s: float) -> None:
    """Configure CrypTen for the TTP provider (crypten.init is called by the caller)."""
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)

    import crypten

    # bound gloo's waits (default 30 min): compat's wrapper of torch.distributed reads
    # these when CrypTen creates its groups (set here: the TTP joins as a rank of its own)
    import crypten.communicator.distributed_communicator as dc

    dc.dist.connect_timeout = dc.dist.group_timeout = datetime.timedelta(seconds=timeout_s)
    os.environ.update(
        RENDEZVOUS=f"tcp://127.0.0.1:{port}",
        WORLD_SIZE=str(world_size),  # computing parties only; the TTP is rank world_size
        RANK=str(rank),
        DISTRIBUTED_BACKEND="gloo",
    )
    # the baseline is upstream's TTP as it is: its streams come from torch.Generator
    # seeds it shares with the parties, which smpc's secure helpers refuse; give its
    # module CrypTen's own helpers back (reloaded from crypten.common.rng)
    import importlib

    from crypten.common import rng
    from crypten.mpc.provider import ttp_provider

    upstream = importlib.reload(rng)
    ttp_provider.generate_random_ring_element = upstream.generate_random_ring_element
    ttp_provider.generate_kbit_random_tensor = upstream.generate_kbit_random_tensor
    crypten.cfg.encoder.precision_bits = 16
    crypten.cfg.mpc.provider = "TTP"
    crypten.cfg.communicator.verbose = True


def _party(rank: int, world_size: int, port: int, batch: int, batches: int, timeout_s: float) -> dict[str, float]:
    import torch

    _join(rank, world_size, port, timeout_s)
    import crypten
    from crypten.mpc.provider import TTPServer

    from smpc import session
    from smpc.model import convert, execute, zoo

    if rank == world_size:
        TTPServer()  # calls crypten.init() and serves until party 0 sends "terminate"
        torch.distributed.destroy_process_group()  # the server returns without leaving
        return {}
    crypten.init()
    try:
        torch.manual_seed(0)  # same weights at every party
        model = zoo.build("lenet5").eval()
        shape = torch.Size((batch, 1, 28, 28))
        program = convert.convert(model, torch.zeros(shape))
        params = session.share_parameters(program, world_size - 1)
        inputs = [torch.rand(shape, generator=torch.Generator().manual_seed(i)) for i in range(batches)]
        outputs = []
        start = time.perf_counter()  # online phase only, as in parties/one_off.py
        for data in inputs:
            x = session.share_input(data if rank == 0 else None, shape, 0)
            outputs.append(session.reveal(execute.run_program(program, params, x)[0], [0]))
        online_s = time.perf_counter() - start
    finally:
        crypten.uninit()  # at party 0 this also stops the TTP server
    if rank != 0:
        return {}
    with torch.no_grad():
        error = max(float((out - model(data)).abs().max()) for out, data in zip(outputs, inputs))
    return {"online_s_per_batch": online_s / batches, "max_abs_error": error}


def _child(rank: int, world_size: int, port: int, batch: int, batches: int, timeout_s: float, results: Any) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        value = _party(rank, world_size, port, batch, batches, timeout_s)
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_upstream_ttp(world_size: int, batch: int, batches: int = 2, timeout_s: float = 600) -> dict:
    """Time LeNet-5 private inference with CrypTen's TTP provider.

    Args:
        world_size: number of computing parties (the TTP server is one more process).
        batch: batch size of each inference.
        batches: how many batches to time.
        timeout_s: bound on the whole run, and on every gloo wait inside the children.

    Returns:
        {"online_s_per_batch", "max_abs_error", "world_size", "batch"}, measured at rank 0.
        Raises RuntimeError with the children's tracebacks or exit codes on any failure.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    from smpc.runs.processes import free_port

    port = free_port()
    procs = [
        ctx.Process(target=_child, args=(r, world_size, port, batch, batches, timeout_s, results), daemon=True)
        for r in range(world_size + 1)  # the last one is the TTP server
    ]
    got: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.start()
        while len(got) < len(procs) and time.monotonic() < deadline:
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
        if all(s == "ok" for s, _ in got.values()):
            for p in procs:  # after a clean run they exit by themselves
                p.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
        results.close()

    def name(r: int) -> str:
        return "ttp" if r == world_size else f"party {r}"

    problems = [f"{name(r)}: {v}" for r, (s, v) in sorted(got.items()) if s != "ok"]
    missing = [r for r in range(len(procs)) if r not in got]
    if missing and not problems:  # else they were stopped because of a failure
        problems.append(f"{[name(r) for r in missing]} did not finish within {timeout_s} s")
    if problems:
        codes = ", ".join(f"{name(r)}={p.exitcode}" for r, p in enumerate(procs))
        raise RuntimeError("upstream TTP run failed (exit codes: " + codes + ")\n" + "\n".join(problems))
    return {**pickle.loads(got[0][1]), "world_size": world_size, "batch": batch}


if __name__ == "__main__":
    for ws in (2, 3):
        print(run_upstream_ttp(ws, 1), flush=True)
