"""smpc's trusted dealer process: supplies every party's correlated randomness, ahead of time.

`smpc dealer CONFIG` runs it (the launcher starts it too). It builds the model's
architecture (never weights), accepts one connection per party, checks their settings
match its own (states.RollCall), and gives each party a fresh 256-bit key (its AES-CTR
stream). Offline phase: it runs the model once on shapes only (trace.py) to trace every
tuple and FSS key a batch will request, and prepares the first batches before the
parties start; the following batches are generated while the parties compute. It never
sees inputs, weights or outputs, and nothing it receives is unpickled or looked up by name.
"""

from __future__ import annotations

import json
import queue
import secrets
import signal
import socket
import threading
import time
from typing import Any

import torch

from smpc import agreement, keys, runfiles, transport, wire
from smpc.audit import AuditLog
from smpc.config import Config
from smpc.model.program import Program
from smpc.dealer import material
from smpc.dealer import messages as m
from smpc.dealer.client import material_receivers, tls_contexts
from smpc.dealer.material import Binding
from smpc.dealer.provider import PROVIDER_NAME
from smpc.dealer.states import ProtocolError, Refusal, RollCall, SettingsError, pool_label, run_label
from smpc.dealer.trace import TracingProvider, replay, shape_run
from smpc.runtime import ProtocolSettings, Runtime
from smpc.errors import AgreementError, PartyError, no_show
from smpc.model import calibrate, pack
from smpc.model.buckets import Bucket
from smpc.protocols.csprng import KEY_BYTES


class _Writer:
    """Sends each party its items of a batch, every item tagged for that party's key, the
    batch and its position (material.Binding), and closes batches."""

    def __init__(self, conns: dict[int, socket.socket], seeds: list[bytes], names: list[str]) -> None:
        self.conns = conns
        self.names = names
        self.bindings = {rank: Binding(seeds[rank]) for rank in conns}
        self.label = run_label(0)
        self.positions = {rank: 0 for rank in conns}
        self.sent = 0

    def emit(self, request: bytes, items: dict[int, torch.Tensor]) -> None:
        for rank, tensor in items.items():
            tag = self.bindings[rank].tag(request, self.label, self.positions[rank], tensor)
            self.sent += self._send(rank, m.Material(tag, tensor))
            self.positions[rank] += 1

    def close(self, message: m.Message) -> None:
        for rank in self.conns:
            self._send(rank, message)

    def _send(self, rank: int, message: m.Message) -> int:
        try:
            return m.send(self.conns[rank], message)
        except OSError as exc:  # which party is gone: the first failure names it
            raise PartyError(f"dealer: connection to party {self.names[rank]} lost: {exc}") from None

    def open(self, label: str) -> None:
        self.label = label
        self.positions = {rank: 0 for rank in self.conns}


def _accept_parties(config: Config, listener: socket.socket, expected: dict[str, str]) -> dict[int, socket.socket]:
    # Handshakes run concurrently (transport.accept_handshakes): a stranger that stays
    # silent or sends garbage is refused on its own connection and never delays a party.
    # Check-ins are then taken one at a time, in arrival order, by the roll call.
    # Over TLS a party must also prove, by its certificate, the name it claims.
    server_ctx = tls_contexts(config, "dealer")[0] if config.plan.transport == "tls" else None
    audit = AuditLog(runfiles.audit_path(config, "dealer"), "dealer")
    roll = RollCall(list(config.names), expected, config.model.program)
    conns: dict[int, socket.socket] = {}
    deadline = time.monotonic() + config.timeouts.connect_s
    arrived: queue.Queue[tuple[socket.socket, m.Message, Any, str, bool]] = queue.Queue()
    finished = threading.Event()

    def refuse(address: str, reason: str) -> None:
        if finished.is_set():  # a handshake thread after the roll call: the dealer may be exiting
            return
        print(f"refused a connection from {address}: {reason}", flush=True)
        audit.record("refused", address=address, reason=reason)

    def handshake(raw: socket.socket, address: tuple[Any, ...]) -> None:
        tls = server_ctx.wrap_socket(raw, server_side=True) if server_ctx is not None else None
        conn = tls if tls is not None else raw
        proven = transport.peer_name(tls) if tls is not None else None
        try:
            message = m.recv(conn, limit=1 << 16)
        except wire.WireError as exc:
            conn.close()
            raise wire.WireError(f"{'certificate of ' + repr(proven) + ': ' if proven else ''}{exc}") from None
        claimed = getattr(message, "party", None)
        if proven is not None and proven != claimed:
            refuse(address[0], f"certificate of {proven!r}, claims {claimed!r}")
            conn.close()
            return
        arrived.put((conn, message, claimed, address[0], proven is not None))

    acceptor = threading.Thread(
        target=transport.accept_handshakes, args=(listener, handshake, finished.is_set, deadline, refuse), daemon=True
    )
    acceptor.start()
    try:
        while not roll.complete:
            try:
                conn, message, claimed, address, tls = arrived.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise PartyError(
                    f"dealer: {no_show(roll.missing(), 'did not connect', config.timeouts.connect_s)}"
                ) from None
            conn.settimeout(config.timeouts.op_s)
            try:
                rank = roll.receive(message, address)
            except ProtocolError as exc:
                try:
                    m.send(conn, m.Error(str(exc)))
                except OSError:
                    pass
                conn.close()
                if isinstance(exc, SettingsError):  # a party of this run disagrees: nobody can go on
                    raise AgreementError(str(exc)) from None
                refuse(address, exc.reason if isinstance(exc, Refusal) else str(exc))  # the roll call goes on
                continue
            print(f"party {claimed} connected from {address}", flush=True)
            audit.record("peer", party=claimed, address=address, tls=tls)
            conns[rank] = conn
    finally:
        finished.set()
        acceptor.join(timeout=2)
        while not arrived.empty():  # latecomers after the roll call (or a failure): not kept
            arrived.get()[0].close()
    return conns


def serve(config: Config) -> dict[str, Any]:
    """Run the dealer for one joint inference described by `config`, or for a service
    (a pool of batches of every size, refilled as party 0 uses them; with
    `serving.on_peer_loss: rejoin` it waits for the parties to join again after a loss).

    Returns:
        A summary: offline seconds (trace + first batches), batches, bytes sent, and the
        seconds spent generating one batch's material.
    """
    torch.set_num_threads(1)
    # the architecture only, never any weights: a run's one shape, or a service's every bucket
    programs = {bucket: pack.build_program(config, bucket=bucket) for bucket in pack.run_buckets(config)}
    program, *others = programs.values()
    checks = calibrate.range_checks(config, program, enforce=False)
    expected = agreement.fields(config, program, checks, others)
    if config.plan.transport == "tls":
        keys.check_certificate("dealer", *config.tls_files("dealer"))
    Runtime(ProtocolSettings.of(config, PROVIDER_NAME)).configure()  # for the shape-only runs
    rejoin = config.serving is not None and config.serving.on_peer_loss == "rejoin"
    while True:
        try:
            return _session(config, programs, expected, checks)
        except AgreementError:
            raise
        except PartyError as exc:
            if _terminating.is_set():
                return {"stopped": "on request"}
            if not rejoin:
                raise
            print(f"{exc}; waiting for every party to join again", flush=True)
            time.sleep(1.0)


def _session(
    config: Config, programs: dict[Bucket, Program], expected: dict[str, str], checks: Any = None
) -> dict[str, Any]:
    # one session: every party checks in, gets its key; then the material
    dealer = config.dealer
    if dealer is None:  # dealer_process refuses a config without one
        raise RuntimeError("the dealer's session needs config.dealer")
    try:
        listener = socket.create_server((dealer.host, dealer.port))
    except OSError as exc:
        raise PartyError(f"dealer: cannot listen on {dealer.host}:{dealer.port}: {exc.strerror}") from None
    with listener:
        conns = _accept_parties(config, listener, expected)
    try:
        seeds = [secrets.token_bytes(KEY_BYTES) for _ in config.parties]
        for rank, conn in conns.items():
            m.send(conn, m.Seed(seeds[rank]))
        receivers = material_receivers(config)
        for rank in [r for r in conns if r not in receivers]:
            conns.pop(rank).close()  # only these parties hear from the dealer again
        if config.serving is not None:
            return _serve_pool(config, conns, seeds, programs)
        return _serve_run(config, next(iter(programs.values())), conns, seeds, checks)
    except wire.PeerError as exc:
        raise PartyError(f"dealer: stopped: party {config.parties[0].name} reports: {exc}") from None
    except (wire.WireError, OSError) as exc:  # reading party 0's messages
        raise PartyError(f"dealer: connection to party {config.parties[0].name} lost: {exc}") from None
    finally:
        for conn in conns.values():
            conn.close()


def _serve_run(
    config: Config, program: Program, conns: dict[int, socket.socket], seeds: list[bytes], checks: Any
) -> dict[str, Any]:
    # a one-off run: party 0 says how many batches; batch 0 is traced, the rest replayed
    party0 = conns[0]
    batches = m.expect(party0, m.Start).batches
    generators = [material.seeded(s) for s in seeds]
    writer = _Writer(conns, seeds, config.names)
    started = time.perf_counter()
    masks = material.FixedMasks(seeds)  # the session's masks of the weights (smpc.protocols.fixed)
    tracer = TracingProvider(generators, writer.emit, masks)
    shape_run(config, program, tracer, checks)  # batch 0: trace and generate in one pass
    per_batch = max(1, writer.sent)
    if config.dealer is None:  # dealer_process refuses a config without one
        raise RuntimeError("the dealer's run needs config.dealer")
    prefetch = max(1, min(batches, config.dealer.prefetch_mib * 2**20 // per_batch))
    writer.close(m.Ready(0, prefetch))
    generating = 0.0

    def offline_done(prepared: int) -> float:
        offline_s = time.perf_counter() - started
        print(
            f"offline phase: {len(tracer.requests)} requests per batch, {prepared} of {batches} batches "
            f"({per_batch / 2**20:.1f} MiB each) ready in {offline_s:.2f} s",
            flush=True,
        )
        return offline_s

    offline_s = offline_done(1) if prefetch == 1 else 0.0
    for batch in range(1, batches):
        writer.open(run_label(batch))
        generating += replay(tracer.requests, generators, writer.emit, masks)
        writer.close(m.Ready(batch, 0))
        if batch + 1 == prefetch:
            offline_s = offline_done(prefetch)
    writer.close(m.Bye())
    party0.settimeout(config.timeouts.run_s)
    m.expect(party0, m.Bye)
    return {
        "offline_s": round(offline_s, 4),
        "batches": batches,
        "requests_per_batch": len(tracer.requests),
        "bytes_sent": writer.sent,
        "bytes_per_batch": per_batch,
        "generation_s_per_batch": round(generating / (batches - 1), 4) if batches > 1 else round(offline_s, 4),
    }


_terminating = threading.Event()


def _serve_pool(
    config: Config, conns: dict[int, socket.socket], seeds: list[bytes], programs: dict[Bucket, Program]
) -> dict[str, Any]:
    # A service: `pool` batches of every shape bucket ahead, then one more of a bucket each
    # time party 0 uses one. Each batch has its own streams (material.batch_seed), so the
    # parties can use the buckets in any order; every reading party gets its part of each
    # batch (party 0 its corrections, with fss both parties their keys), and only party
    # 0 asks for more. Party 0 pings while idle; silence for three op timeouts means it
    # is gone.
    serving = config.serving
    if serving is None:  # _session serves a pool only for a service
        raise RuntimeError("a pool of batches needs config.serving")
    party0 = conns[0]
    started = time.perf_counter()
    writer = _Writer(conns, seeds, config.names)
    requests: dict[Bucket, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {}
    made: dict[Bucket, int] = {}
    masks = material.FixedMasks(seeds)  # the session's masks of the weights (smpc.protocols.fixed)

    def make(bucket: Bucket) -> None:
        index = made.get(bucket, 0)
        generators = [material.seeded(material.batch_seed(s, bucket, index)) for s in seeds]
        writer.open(pool_label(bucket, index))
        if bucket not in requests:  # the first batch of a bucket: trace and generate in one pass
            tracer = TracingProvider(generators, writer.emit, masks)
            program = programs[bucket]
            # the parties' range checks spend material too: the same checks, not enforced
            shape_run(config, program, tracer, calibrate.range_checks(config, program, enforce=False))
            requests[bucket] = tracer.requests
        else:
            replay(requests[bucket], generators, writer.emit, masks)
        writer.close(m.Pooled(bucket.rows, bucket.seq, index))
        made[bucket] = index + 1

    for bucket in programs:
        for _ in range(serving.pool):
            make(bucket)
    print(
        f"offline phase: a pool of {serving.pool} batches of each shape ({', '.join(b.label for b in programs)}; "
        f"{writer.sent / 2**20:.1f} MiB) ready in {time.perf_counter() - started:.2f} s",
        flush=True,
    )
    party0.settimeout(3 * config.timeouts.op_s)
    while True:
        try:
            message = m.recv(party0, limit=1 << 16)
        except TimeoutError:
            raise PartyError(
                f"dealer: party {config.parties[0].name} was silent for {3 * config.timeouts.op_s:g} s"
            ) from None
        except (wire.WireError, OSError):
            if _terminating.is_set():  # asked to stop: the parties are leaving too
                break
            raise
        if isinstance(message, m.Bye):
            break
        if isinstance(message, m.Refill):
            bucket = Bucket(message.rows, message.seq)
            if bucket not in programs:
                raise PartyError(
                    f"dealer: party {config.parties[0].name} asked for a batch of {bucket.label}, which is not served"
                )
            make(bucket)
        elif isinstance(message, m.Error):
            raise wire.PeerError(wire.one_line(message.message))
        elif not isinstance(message, m.Ping):
            raise PartyError(f"dealer: unexpected {type(message).__name__.upper()} from party {config.parties[0].name}")
    return {"batches": sum(made.values()), "bytes_sent": writer.sent, "buckets": [[b.rows, b.seq] for b in programs]}


def dealer_process(config: Config) -> None:
    """`smpc dealer`: serve the run (or the service) of `config` and write its summary (the
    entry point's body, under smpc.runfiles.run_process)."""
    if config.dealer is None:
        raise PartyError(f"{config.source}: randomness is 'local': this config has no dealer")
    if config.serving is not None:  # a service drains: the dealer leaves when party 0 does
        signal.signal(signal.SIGTERM, lambda *_: _terminating.set())
    summary = serve(config)
    runfiles.write_json(runfiles.result_path(config, "dealer"), summary)
    print(f"done: {json.dumps(summary)}", flush=True)
