"""smpc's trusted dealer: supplies every party's correlated randomness, ahead of time.

`smpc dealer CONFIG` runs it (the launcher starts it too). It builds the model's
architecture (never weights), accepts one connection per party, checks their settings
match its own, and gives each party a fresh 256-bit key (its AES-CTR stream). Offline phase: it runs the
model once on shapes only (no values, no parties) to trace every tuple CrypTen will
request, and computes party 0's corrections for the first batch before the parties
start; the following batches are generated while the parties compute. It never
sees inputs, weights or outputs, and nothing it receives is unpickled or looked up by name.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import signal
import ssl
import sys
import threading
import time
from typing import Any

import torch

from smpc import agreement, compat, keys, runfiles, wire
from smpc.audit import AuditLog
from smpc.config import Config, load_config
from smpc.convert import Program
from smpc.errors import AgreementError, PartyError, no_show
from smpc.execute import run_program
from smpc.model import calibrate, pack
from smpc.protocols import top_k
from smpc.protocols.csprng import KEY_BYTES, AesCtrGenerator
from smpc.dealer import material
from smpc.dealer.provider import PROVIDER_NAME, TracingProvider


class ShapeCommunicator:
    """A stand-in for CrypTen's communicator that moves no data: every collective
    returns a tensor of the right shape. CrypTen's protocols do not branch on
    values, so a run over it requests exactly the tuples a real run requests."""

    def __init__(self, world_size: int, rank: int = 0) -> None:
        self.world_size, self.rank = world_size, rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_rank(self) -> int:
        return self.rank

    def all_reduce(self, input, op=None, batched=False):
        return [t.clone() for t in input] if batched else input.clone()

    def reduce(self, input, dst, op=None, batched=False):
        return self.all_reduce(input, batched=batched)

    def broadcast(self, input, src, group=None, batched=False):
        return input

    def all_gather(self, tensor):
        return [tensor.clone() for _ in range(self.world_size)]

    def gather(self, tensor, dst):
        return self.all_gather(tensor)

    def scatter(self, scatter_list, src, size=None, async_op=False):
        return scatter_list[self.rank].clone() if src == self.rank else torch.zeros(size, dtype=torch.long)

    def send(self, tensor, dst):
        return None

    def recv(self, tensor, src=None):
        return tensor

    def barrier(self):
        return None


def _shape_run(config: Config, program: Program, provider: TracingProvider, checks: Any = None) -> None:
    # The same sequence of secret operations as a party's batch, on zeros.
    import crypten

    crypten_generators = crypten.generators
    for key in ("prev", "next", "local", "global"):  # fresh keys: these values are thrown away
        crypten_generators[key][torch.device("cpu")] = AesCtrGenerator()
    owner = config.rank_of(config.model_owner.name)
    with compat.substitute_communicator(ShapeCommunicator(len(config.parties))):
        compat.register_provider(PROVIDER_NAME, provider)
        params = {k: crypten.cryptensor(torch.zeros_like(v), src=owner) for k, v in sorted(program.secret.items())}
        inputs = {spec.name: crypten.cryptensor(torch.zeros(spec.share_shape), src=0) for spec in program.inputs}
        # the parties' range checks spend material too (`checks`, not enforced: on zeros
        # they must not stop anything)
        outputs = run_program(program, params, inputs, checks=checks)
        for k in top_k.reveal_kinds(config):  # what the parties compute before revealing classes
            top_k.top_k(outputs[0], k)


def _tls_contexts(config: Config, name: str):
    from smpc import transport

    files = config.tls_files(name)
    return transport.server_context(*files), transport.client_context(*files)


def _accept_parties(config: Config, listener: socket.socket, expected: dict[str, str]) -> dict[int, socket.socket]:
    # over TLS a party must also prove, by its certificate, the name it claims
    server_ctx = _tls_contexts(config, "dealer")[0] if config.effective_transport == "tls" else None
    audit = AuditLog(runfiles.audit_path(config, "dealer"), "dealer")
    conns: dict[int, socket.socket] = {}
    deadline = time.monotonic() + config.timeouts.connect_s
    while len(conns) < len(config.parties):
        listener.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            conn, address = listener.accept()
        except socket.timeout:
            missing = [p.name for r, p in enumerate(config.parties) if r not in conns]
            raise PartyError(f"dealer: {no_show(missing, 'did not connect', config.timeouts.connect_s)}") from None
        conn.settimeout(config.timeouts.op_s)
        proven = None
        if server_ctx is not None:
            try:
                conn = server_ctx.wrap_socket(conn, server_side=True)
                from smpc.transport import peer_name

                proven = peer_name(conn)
            except (ssl.SSLError, OSError) as exc:
                print(f"refused a connection from {address[0]}: {exc}", flush=True)
                audit.record("refused", address=address[0], reason=str(exc))
                conn.close()
                continue
        try:
            hello = wire.expect(conn, wire.Kind.HELLO, limit=1 << 16).json()
            name, rank = str(hello.get("party")), hello.get("rank")
            if proven is not None and proven != name:
                print(f"refused a connection from {address[0]}: certificate of {proven!r}, claims {name!r}", flush=True)
                audit.record(
                    "refused", address=address[0], reason=f"certificate of {proven!r}, claims {name!r}"
                )
                conn.close()
                continue
            if name not in config.names or config.rank_of(name) != rank or rank in conns:
                raise PartyError(f"dealer: unexpected party {name!r} (rank {rank}) from {address[0]}")
            if hello.get("abort") is not None:  # the parties stopped before checking in: say why
                raise AgreementError(f"dealer: stopped before the run: {name} reports: {wire.one_line(hello['abort'])}")
            field = agreement.first_difference(expected, {str(k): str(v) for k, v in dict(hello.get("agreement", {})).items()})
            if field is not None:
                raise AgreementError(f"agreement check failed: {field} differs between the dealer and {name} (compare their configs)")
        except (PartyError, wire.WireError, OSError) as exc:
            try:
                wire.send_json(conn, wire.Kind.ERROR, {"message": str(exc)})
            except OSError:
                pass
            conn.close()
            raise (AgreementError if isinstance(exc, AgreementError) else PartyError)(str(exc)) from None
        print(f"party {name} connected from {address[0]}", flush=True)
        audit.record("peer", party=name, address=address[0], tls=proven is not None)
        conns[rank] = conn
    return conns


def serve(config: Config) -> dict[str, Any]:
    """Run the dealer for one joint inference described by `config`, or for a service
    (a pool of batches of every size, refilled as party 0 uses them; with
    `serving.on_peer_loss: rejoin` it waits for the parties to join again after a loss).

    Returns:
        A summary: offline seconds (trace + first batch), batches and bytes sent.
    """
    torch.set_num_threads(1)
    program = pack.build_program(config, batch=config.batch_sizes[0])  # the architecture only: never any weights
    checks = calibrate.range_checks(config, program, enforce=False)
    expected = agreement.fields(config, program, checks)
    if config.effective_transport == "tls":
        keys.check_certificate("dealer", *config.tls_files("dealer"))
    compat.configure(config.protocol.precision_bits, PROVIDER_NAME, config.protocol.functions.model_dump(),
                     config.protocol.comparisons)
    rejoin = config.serving is not None and config.serving.on_peer_loss == "rejoin"
    while True:
        try:
            return _session(config, program, expected, checks)
        except AgreementError:
            raise
        except PartyError as exc:
            if _terminating.is_set():
                return {"stopped": "on request"}
            if not rejoin:
                raise
            print(f"{exc}; waiting for every party to join again", flush=True)
            time.sleep(1.0)


def _session(config: Config, program: Program, expected: dict[str, str], checks: Any = None) -> dict[str, Any]:
    # one session: every party checks in, gets its seed; then party 0 its material
    try:
        listener = socket.create_server((config.dealer.host, config.dealer.port))
    except OSError as exc:
        raise PartyError(f"dealer: cannot listen on {config.dealer.host}:{config.dealer.port}: {exc.strerror}") from None
    with listener:
        conns = _accept_parties(config, listener, expected)
    try:
        seeds = [secrets.token_bytes(KEY_BYTES) for _ in config.parties]
        for rank, conn in conns.items():
            wire.send(conn, wire.Kind.SEED, torch.frombuffer(bytearray(seeds[rank]), dtype=torch.int64))
        streams = material_receivers(config)
        for rank in [r for r in conns if r not in streams]:
            conns.pop(rank).close()  # only these parties hear from the dealer again
        party0 = conns[0]
        if config.serving is not None:
            return _serve_pool(config, party0, seeds)
        batches = int(wire.expect(party0, wire.Kind.NEXT, limit=1 << 16).json()["batches"])
        generators = [material.seeded(s) for s in seeds]
        sent = 0

        def emit(tag: bytes, items: dict[int, torch.Tensor]) -> None:
            nonlocal sent
            for rank, tensor in items.items():
                sent += wire.send(conns[rank], wire.Kind.MATERIAL, tensor, tag)

        def ready(body: dict[str, Any]) -> None:
            for conn in conns.values():
                wire.send_json(conn, wire.Kind.READY, body)

        started = time.perf_counter()
        tracer = TracingProvider(generators, emit)
        _shape_run(config, program, tracer, checks)  # batch 0: trace and generate in one pass
        per_batch = max(1, sent)
        prefetch = max(1, min(batches, config.dealer.prefetch_mib * 2**20 // per_batch))
        ready({"batch": 0, "prefetch": prefetch})
        for batch in range(1, batches):
            if batch == prefetch:
                offline_s = time.perf_counter() - started
                print(f"offline phase: {len(tracer.requests)} requests per batch, {prefetch} of {batches} batches "
                      f"({per_batch / 2**20:.1f} MiB each) ready in {offline_s:.2f} s", flush=True)
            for kind, args, kwargs in tracer.requests:
                emit(material.request_tag(kind, args, kwargs), material.material(kind, generators, args, kwargs))
            ready({"batch": batch})
        if batches <= prefetch:
            offline_s = time.perf_counter() - started
            print(f"offline phase: {len(tracer.requests)} requests per batch, all {batches} batches "
                  f"({per_batch / 2**20:.1f} MiB each) ready in {offline_s:.2f} s", flush=True)
        for conn in conns.values():
            wire.send_json(conn, wire.Kind.BYE, {})
        party0.settimeout(config.timeouts.run_s)
        wire.expect(party0, wire.Kind.BYE, limit=1 << 16)
        return {"offline_s": offline_s, "batches": batches, "requests_per_batch": len(tracer.requests), "bytes_sent": sent}
    except wire.PeerError as exc:
        raise PartyError(f"dealer: stopped: party {config.parties[0].name} reports: {exc}") from None
    except (wire.WireError, OSError) as exc:
        raise PartyError(f"dealer: connection to party {config.parties[0].name} lost: {exc}") from None
    finally:
        for conn in conns.values():
            conn.close()


def material_receivers(config: Config) -> tuple[int, ...]:
    """The parties that read material from the dealer during a run: party 0 (its
    corrections), and with comparisons: fss every party (its FSS keys)."""
    return tuple(range(len(config.parties))) if config.protocol.comparisons == "fss" else (0,)


_terminating = threading.Event()


def _serve_pool(config: Config, party0: socket.socket, seeds: list[bytes]) -> dict[str, Any]:
    # A service: `pool` batches of every size ahead, then one more of a size each time
    # party 0 uses one. Each batch has its own streams (material.batch_seed), so the
    # parties can use the sizes in any order. Party 0 pings while idle; silence for
    # three op timeouts means it is gone.
    serving = config.serving
    started = time.perf_counter()
    sent = 0
    requests: dict[int, list] = {}
    made: dict[int, int] = {}

    def emit(tag: bytes, items: dict[int, torch.Tensor]) -> None:
        nonlocal sent
        sent += wire.send(party0, wire.Kind.MATERIAL, items[0], tag)

    def make(size: int) -> None:
        index = made.get(size, 0)
        generators = [material.seeded(material.batch_seed(s, size, index)) for s in seeds]
        if size not in requests:  # the first batch of a size: trace and generate in one pass
            tracer = TracingProvider(generators, emit)
            _shape_run(config, pack.build_program(config, batch=size), tracer)
            requests[size] = tracer.requests
        else:
            for kind, args, kwargs in requests[size]:
                emit(material.request_tag(kind, args, kwargs), material.material(kind, generators, args, kwargs))
        wire.send_json(party0, wire.Kind.READY, {"size": size, "index": index})
        made[size] = index + 1

    for size in serving.batch_sizes:
        for _ in range(serving.pool):
            make(size)
    print(f"offline phase: a pool of {serving.pool} batches of each size {list(serving.batch_sizes)} "
          f"({sent / 2**20:.1f} MiB) ready in {time.perf_counter() - started:.2f} s", flush=True)
    party0.settimeout(3 * config.timeouts.op_s)
    while True:
        try:
            msg = wire.recv(party0, limit=1 << 16)
        except socket.timeout:
            raise PartyError(f"dealer: party {config.parties[0].name} was silent for {3 * config.timeouts.op_s:g} s") from None
        except (wire.WireError, OSError):
            if _terminating.is_set():  # asked to stop: the parties are leaving too
                break
            raise
        if msg.kind == wire.Kind.BYE:
            break
        if msg.kind == wire.Kind.NEXT:
            size = int(msg.json().get("size", -1))
            if size not in serving.batch_sizes:
                raise PartyError(f"dealer: party {config.parties[0].name} asked for a batch of {size} rows")
            make(size)
        elif msg.kind != wire.Kind.PING:
            raise PartyError(f"dealer: unexpected {msg.kind.name} from party {config.parties[0].name}")
    return {"batches": sum(made.values()), "bytes_sent": sent, "batch_sizes": list(serving.batch_sizes)}


def report_abort(config: Config, rank: int, fields: dict[str, str], reason: str) -> None:
    """At a party that stops before checking in (the parties' settings differ): tell the
    dealer why, so that it stops at once naming the cause instead of waiting for it.
    Best effort, within 5 s: a dealer that cannot be reached learns it from its timeout."""
    address = (config.dealer.host, config.dealer.port)
    name = config.parties[rank].name
    deadline = time.monotonic() + min(5.0, config.timeouts.connect_s)
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(address, timeout=max(0.2, deadline - time.monotonic()))
            if config.effective_transport == "tls":
                sock = _tls_contexts(config, name)[1].wrap_socket(sock, server_hostname="dealer")
            with sock:
                wire.send_json(sock, wire.Kind.HELLO, {"party": name, "rank": rank, "agreement": fields, "abort": reason})
            return
        except (OSError, ssl.SSLError):
            time.sleep(0.2)


def connect(config: Config, rank: int, fields: dict[str, str]) -> tuple[bytes, socket.socket | None]:
    """At a party: check in with the dealer (retrying until timeouts.connect_s).

    Returns:
        The seed this party shares with the dealer, and (at the parties that read
        material: `material_receivers`) the open connection on which it will arrive.
    """
    address = (config.dealer.host, config.dealer.port)
    deadline = time.monotonic() + config.timeouts.connect_s
    name = config.parties[rank].name
    client_ctx = _tls_contexts(config, name)[1] if config.effective_transport == "tls" else None
    while True:
        try:
            sock = socket.create_connection(address, timeout=config.timeouts.op_s)
            if client_ctx is not None:
                sock = client_ctx.wrap_socket(sock, server_hostname="dealer")
            break
        except ssl.SSLCertVerificationError as exc:
            raise PartyError(f"{address[0]}:{address[1]} is not the dealer: {exc.verify_message}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise PartyError(
                    f"the dealer at {address[0]}:{address[1]} did not answer within timeouts.connect_s = "
                    f"{config.timeouts.connect_s:g} s"
                ) from None
            time.sleep(0.2)
    try:
        wire.send_json(sock, wire.Kind.HELLO, {"party": name, "rank": rank, "agreement": fields})
        sock.settimeout(config.timeouts.connect_s)  # the dealer answers once everyone is there
        seed_msg = wire.expect(sock, wire.Kind.SEED, limit=1 << 16)
        if seed_msg.tensor.dtype != torch.long or tuple(seed_msg.tensor.shape) != (KEY_BYTES // 8,):
            raise wire.WireError(f"SEED: expected {KEY_BYTES // 8} int64 (a 256-bit key), got {seed_msg.tensor.dtype} {list(seed_msg.tensor.shape)}")
        seed = seed_msg.tensor.numpy().tobytes()
        sock.settimeout(config.timeouts.op_s)
    except (wire.WireError, OSError) as exc:
        sock.close()
        raise PartyError(f"dealer refused {name}: {exc}") from None
    if rank not in material_receivers(config):
        sock.close()
        return seed, None
    return seed, sock


def main(argv: list[str] | None = None) -> int:
    """`smpc dealer CONFIG`: serve one run; exit non-zero with one error line on failure."""
    parser = argparse.ArgumentParser(prog="smpc dealer", description="Run the trusted dealer of CONFIG.")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    config = None
    try:
        config = load_config(args.config)
        if config.dealer is None:
            raise PartyError(f"{config.source}: randomness is 'local': this config has no dealer")
        if config.serving is not None:  # a service drains: the dealer leaves when party 0 does
            signal.signal(signal.SIGTERM, lambda *_: _terminating.set())
        summary = serve(config)
    except Exception as exc:
        return runfiles.fail(config, "dealer", exc)
    print(f"done: {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
