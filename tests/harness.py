"""Run a function in N real party processes joined over gloo, with bounded waits.

Each party is a spawned process (fresh interpreter, so it exercises the compat
layer on import). Results come back through a queue; a party that raises sends
its traceback, and one that dies without reporting counts as a failure.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import time
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

import yaml

from smpc import compat  # noqa: F401  (first: the party functions below import crypten)
from smpc.runs.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "models" / "digits_cnn.safetensors"
DATA = ROOT / "data" / "digits-test.safetensors"


def _child(fn, rank, world_size, ports, args, results, tls_dir) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        from smpc.runtime import Runtime

        names = [f"p{r}" for r in range(world_size)]
        tls = None if tls_dir is None else (tls_dir / "ca.pem", tls_dir / f"p{rank}.pem", tls_dir / f"p{rank}.key")
        with Runtime().joined(rank, names, [("127.0.0.1", p) for p in ports], 30, 30, tls=tls):
            value = fn(rank, world_size, *args)
        # plain pickle bytes: the queue's own pickler would pass tensors through shared
        # memory that vanishes when this process exits
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_parties(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 120, tls_dir: Path | None = None
) -> list[Any]:
    """Call fn(rank, world_size, *args) in each of `world_size` joined parties
    (named p0, p1, ...), over gloo, or over TLS with the keys in `tls_dir`.

    Returns the per-rank return values; raises AssertionError with every party's
    traceback (or its exit code, if it died without reporting) on any failure.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    ports = [free_port() for _ in range(world_size)]
    procs = [
        ctx.Process(target=_child, args=(fn, r, world_size, ports, args, results, tls_dir)) for r in range(world_size)
    ]
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


_STAND_IN_SEEDS = (b"\x01" * 32, b"\x02" * 32)


def use_stand_in_dealer(rank: int, comparisons: str = "fss", truncation: str = "local") -> None:
    """Inside a joined two-party process: take the dealer's material from a stand-in
    dealer that this party runs itself (both parties hold both dealer streams: insecure,
    and only for tests, so that protocols run without a dealer process), and use the
    given comparison and truncation protocols."""
    import crypten

    from smpc.protocols import switches
    from smpc.dealer import material
    from smpc.dealer.provider import DealerTuples

    class _StandInDealer(DealerTuples):
        """The dealer's material made in the party: every request, both ranks' items."""

        def __init__(self) -> None:
            super().__init__()
            self.dealer = [material.seeded(s) for s in _STAND_IN_SEEDS]
            self.own = material.seeded(_STAND_IN_SEEDS[rank])

        def _item(self, kind, args, kwargs):
            return material.material(kind, self.dealer, args, kwargs).get(rank)

        def _shares(self, kind, args, kwargs):
            item = self._item(kind, args, kwargs)
            shares = material.draw(kind, self.own, rank, args, kwargs)
            return shares + ([item] if rank == 0 else [])

        def fss_key(self, kind, args):
            from smpc.protocols import fss

            return fss.party_key(kind, self.own, rank, args, self._item(kind, args, {}))

    switches.register_provider("TEST_DEALER", _StandInDealer())
    crypten.cfg.mpc.provider = "TEST_DEALER"
    switches.use_comparisons(comparisons, truncation)


def write_config(
    tmp_path: Path,
    samples: int = 100,
    helpers: int = 0,
    batch_size: int = 64,
    dealer: bool = False,
    data_owners: int = 1,
    **overrides: Any,
) -> Path:
    """A digits config on free local ports: alice (data, output), bob (model),
    `helpers` parties that only compute, and optionally more data owners (each with
    role output) splitting the `samples` rows, and a dealer."""
    from smpc import artifacts

    full = artifacts.load_data(DATA, (1, 8, 8))
    parties = []
    bounds = [samples * i // data_owners for i in range(data_owners + 1)]
    for i in range(data_owners):
        data = tmp_path / f"data{i}.safetensors"
        artifacts.save_data(data, full.inputs[bounds[i] : bounds[i + 1]], full.labels[bounds[i] : bounds[i + 1]])
        name = "alice" if i == 0 else f"owner{i}"
        parties.append(
            {
                "name": name,
                "host": "127.0.0.1",
                "port": free_port(),
                "roles": ["data_owner", "output"],
                "data": str(data),
            }
        )
    parties.insert(
        1, {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": str(WEIGHTS)}
    )
    for i in range(helpers):
        parties.append({"name": f"helper{i}", "host": "127.0.0.1", "port": free_port()})
    model = {"architecture": "digits_cnn", "input_shape": [1, 8, 8]}
    return _write(tmp_path, parties, model, batch_size, dealer, overrides)


def write_tls_config(
    tmp_path: Path, samples: int, batch_size: int, op_s: float | None = None, **overrides: Any
) -> Path:
    """write_config's digits run for alice and bob over TLS, with a fresh consortium's
    keys in tmp_path/keys (and timeouts.op_s, if given)."""
    from launch.cli import main as smpc_main

    if smpc_main(["keys", "init", str(tmp_path / "keys"), "alice", "bob"]) != 0:
        raise RuntimeError("smpc keys init failed")
    tls = {"ca": str(tmp_path / "keys" / "ca.pem"), "certs": str(tmp_path / "keys")}
    path = write_config(tmp_path, samples=samples, batch_size=batch_size, transport="tls", tls=tls, **overrides)
    if op_s is not None:
        doc = yaml.safe_load(path.read_text())
        doc["timeouts"]["op_s"] = op_s
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _write(tmp_path: Path, parties: list, model: dict, batch_size: int, dealer: bool, overrides: dict) -> Path:
    # the rest of a test config, on free local ports, written as tmp_path/config.yaml
    doc: dict[str, Any] = {
        "version": 1,
        "parties": parties,
        "model": model,
        "batch_size": batch_size,
        "timeouts": {"connect_s": 60, "op_s": 30, "run_s": 300},
        "run_dir": str(tmp_path / "run"),
    }
    if dealer:
        doc["randomness"] = "dealer"
        doc["dealer"] = {"host": "127.0.0.1", "port": free_port()}
    doc.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (to prove nothing was left running)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def write_program_config(
    tmp_path: Path, model_dir: Path, data: Path, batch_size: int, dealer: bool = False, **overrides: Any
) -> Path:
    """A config for a packed model directory: alice (data, output) and bob (model), on
    free local ports."""
    parties = [
        {
            "name": "alice",
            "host": "127.0.0.1",
            "port": free_port(),
            "roles": ["data_owner", "output"],
            "data": str(data),
        },
        {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": str(model_dir)},
    ]
    return _write(tmp_path, parties, {"program": str(model_dir)}, batch_size, dealer, overrides)


def write_serve_config(
    tmp_path: Path, clients: tuple[str, ...] = ("analyst",), dealer: bool = True, **serving: Any
) -> Path:
    """A service config for the digits CNN (alice a helper, bob the model owner) on free
    local ports, with its consortium keys made in tmp_path/keys (CA, parties, dealer,
    the clients and a stranger `eve` the config does not allow)."""
    from smpc import keys

    key_dir = tmp_path / "keys"
    keys.create_ca(key_dir)
    for name in ["alice", "bob", "dealer", *clients, "eve"]:
        keys.issue(key_dir, name)
    parties = [
        {"name": "alice", "host": "127.0.0.1", "port": free_port(), "api_port": free_port()},
        {
            "name": "bob",
            "host": "127.0.0.1",
            "port": free_port(),
            "api_port": free_port(),
            "roles": ["model_owner"],
            "weights": str(WEIGHTS),
        },
    ]
    model = {"architecture": "digits_cnn", "input_shape": [1, 8, 8]}
    overrides = {
        "transport": "tls",
        "tls": {"ca": str(key_dir / "ca.pem"), "certs": str(key_dir)},
        "serving": {"model_name": "digits", "clients": list(clients), "max_batch": 8, **serving},
        # short, so that the tests see an idle service outlive it
        "timeouts": {"connect_s": 60, "op_s": 5, "run_s": 300},
    }
    return _write(tmp_path, parties, model, 64, dealer, overrides)
