"""Keys and the mutually authenticated TLS transport: real certificates, real sockets."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from harness import free_port, run_parties
from smpc import keys, transport
from smpc.errors import PartyError
from launch.cli import main as smpc_main
from test_ops_mpc import evaluate_with_exact_truncation

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    keys.create_ca(directory)
    for name in ("p0", "p1", "p2", "alice", "bob", "dealer"):
        keys.issue(directory, name)
    return directory


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("other-ca")
    keys.create_ca(directory)
    keys.issue(directory, "p1")  # the right name, from the wrong CA
    return directory


def test_keys_cli_creates_private_keys_0600_and_never_prints_them(tmp_path):
    result = subprocess.run(
        SMPC + ["keys", "init", str(tmp_path / "k"), "alice", "bob"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in ("ca", "alice", "bob"):
        mode = stat.S_IMODE((tmp_path / "k" / f"{name}.key").stat().st_mode)
        assert mode == 0o600, f"{name}.key has mode {oct(mode)}"
        assert (tmp_path / "k" / f"{name}.pem").exists()
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    files, issued = result.stdout.split("signed by this CA (2):\n")
    assert [line.split()[1] for line in files.splitlines()] == ["alice", "bob", "smpc"]
    assert [line.split()[0] for line in issued.splitlines()] == ["alice", "bob"]
    old = (tmp_path / "k" / "bob.pem").read_bytes(), (tmp_path / "k" / "bob.key").read_bytes()
    rotated = subprocess.run(
        SMPC + ["keys", "rotate", str(tmp_path / "k"), "bob"], capture_output=True, text=True, timeout=60
    )
    assert rotated.returncode == 0
    assert (tmp_path / "k" / "bob.pem").read_bytes() != old[0] and (tmp_path / "k" / "bob.key").read_bytes() != old[1]
    assert stat.S_IMODE((tmp_path / "k" / "bob.key").stat().st_mode) == 0o600
    again = subprocess.run(
        SMPC + ["keys", "init", str(tmp_path / "k"), "carol"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "a CA exists already" in again.stderr


def _per_peer(rank: int, world_size: int) -> dict:
    from smpc import session

    x = session.share_input(torch.ones(1000) if rank == 0 else None, torch.Size((1000,)), 0)
    session.reveal(x * x, [0])
    return session.bytes_per_peer()


def test_bytes_are_counted_per_peer(consortium):
    counts = run_parties(_per_peer, 3, tls_dir=consortium, timeout=120)
    assert set(counts[0]) == {"p1", "p2"} and set(counts[1]) == {"p0", "p2"}
    # the reveal goes to p0 only: p1 and p2 send their 1000-element shares to p0
    assert counts[1]["p0"] > 8000 and counts[2]["p0"] > 8000
    assert counts[1]["p0"] > counts[1]["p2"]


def _bytes_of_a_product(rank: int, world_size: int) -> int:
    import crypten.communicator as comm

    from smpc import session

    x = session.share_input(torch.ones(100_000) if rank == 0 else None, torch.Size((100_000,)), 0)
    comm.get().reset_communication_stats()
    (x * x).get_plain_text()
    return int(comm.get().get_communication_stats()["bytes"])


def test_a_party_books_the_bytes_it_sends_over_gloo_as_over_tls(consortium):
    # over TLS a party counts the bytes it writes; over gloo, CrypTen booked an opening
    # of two parties as sent and received (twice what crossed the wire)
    tls = run_parties(_bytes_of_a_product, 2, tls_dir=consortium, timeout=120)
    gloo = run_parties(_bytes_of_a_product, 2, timeout=120)
    for sent_tls, sent_gloo in zip(tls, gloo):
        assert sent_tls >= 2 * 8 * 100_000  # at least its share of x - a and of the truncation
        assert sent_gloo <= sent_tls <= 1.01 * sent_gloo, (tls, gloo)


def test_ops_over_tls_match_plaintext_and_reveal_to_one_party(consortium):
    names = ["conv2d", "maxpool2d", "softmax"]
    for world_size in (2, 3):
        results = run_parties(evaluate_with_exact_truncation, world_size, names, tls_dir=consortium, timeout=180)
        for name in names:
            assert results[0][name] < 0.02, name
            assert all(r[name] is None for r in results[1:])


def _listen_for_p1(consortium: Path, port: int, log: list[str]) -> dict:
    outcome: dict = {}

    def serve():
        ca, cert, key = consortium / "ca.pem", consortium / "p0.pem", consortium / "p0.key"
        try:
            transport.connect_mesh(
                0,
                ["p0", "p1"],
                [("127.0.0.1", port), ("127.0.0.1", free_port())],
                transport.server_context(ca, cert, key),
                transport.client_context(ca, cert, key),
                connect_timeout_s=4,
                op_timeout_s=4,
                log=lambda event, line: log.append(f"{event}: {line}"),
            )
            outcome["result"] = "joined"
        except PartyError as exc:
            outcome["result"] = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    outcome["thread"] = thread
    return outcome


def _intrude(port: int, ctx, claim: str) -> None:
    import socket
    import time

    from smpc import wire

    for _ in range(50):
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            time.sleep(0.05)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="p0")
        wire.send_json(tls, wire.Kind.HELLO, {"party": claim, "rank": 1})
        tls.recv(1)  # the server closes on us
    except (OSError, Exception):
        pass
    finally:
        raw.close()


@pytest.mark.parametrize("intruder", ["wrong CA", "no certificate", "another party's certificate"])
def test_outsiders_cannot_join(consortium, outsiders, intruder):
    import ssl

    port = free_port()
    log: list[str] = []
    outcome = _listen_for_p1(consortium, port, log)
    if intruder == "wrong CA":
        ctx = transport.client_context(consortium / "ca.pem", outsiders / "p1.pem", outsiders / "p1.key")
    elif intruder == "no certificate":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(consortium / "ca.pem")
    else:  # alice's genuine certificate, claiming to be p1
        ctx = transport.client_context(consortium / "ca.pem", consortium / "alice.pem", consortium / "alice.key")
    _intrude(port, ctx, "p1")
    outcome["thread"].join(timeout=30)
    assert outcome["result"] == "party p1 did not join within timeouts.connect_s = 4 s"
    assert any(line.startswith("refused: refused a connection from 127.0.0.1") for line in log), log
    if intruder == "another party's certificate":
        assert "certificate of 'alice', claims 'p1'" in " ".join(log)


def test_a_party_answering_with_the_wrong_certificate_is_not_trusted(consortium):
    # p1 connects to p0's address, but whoever listens there proves to be "bob"
    import socket
    import ssl

    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    server = transport.server_context(consortium / "ca.pem", consortium / "bob.pem", consortium / "bob.key")

    def fake_p0():
        conn, _ = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            pass

    threading.Thread(target=fake_p0, daemon=True).start()
    ca, cert, key = consortium / "ca.pem", consortium / "p1.pem", consortium / "p1.key"
    with pytest.raises(PartyError, match=r"^127\.0\.0\.1:\d+ is not party p0: Hostname mismatch"):
        transport.connect_mesh(
            1,
            ["p0", "p1"],
            [("127.0.0.1", port), ("127.0.0.1", free_port())],
            transport.server_context(ca, cert, key),
            transport.client_context(ca, cert, key),
            5,
            5,
            log=lambda event, line: None,
        )
    listener.close()


def test_a_tls_run_completes_while_a_stranger_keeps_connecting_to_a_party(tmp_path):
    # no certificate: some connections stay open and say nothing, others send random
    # bytes, at alice's port and at the dealer's; both go on waiting for the real
    # parties (each handshake in its own thread) and the answers are right
    import random

    import yaml

    from harness import write_config
    from launch import load_config, run

    smpc_main(["keys", "init", str(tmp_path / "keys"), "alice", "bob", "dealer"])
    path = write_config(tmp_path, samples=120, batch_size=60, dealer=True)
    doc = yaml.safe_load(path.read_text())
    doc.update(transport="tls", tls={"ca": str(tmp_path / "keys" / "ca.pem"), "certs": str(tmp_path / "keys")})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = load_config(path)
    alice = (config.parties[0].host, config.parties[0].port)
    dealer = (config.dealer.host, config.dealer.port)
    stop, held, attempts = threading.Event(), [], [0]

    def stranger():
        rng = random.Random(7)
        while not stop.is_set():
            try:
                sock = socket.create_connection(alice if attempts[0] % 4 < 2 else dealer, timeout=1)
            except OSError:
                time.sleep(0.005)
                continue
            attempts[0] += 1
            if attempts[0] % 2:
                held.append(sock)  # silent, left open
            else:
                try:
                    sock.sendall(rng.randbytes(rng.randint(1, 4096)))
                except OSError:
                    pass
                sock.close()

    thread = threading.Thread(target=stranger, daemon=True)
    thread.start()
    try:
        report = run(config, echo=False)
    finally:
        stop.set()
        thread.join(5)
        for sock in held:
            sock.close()
    # alice listens only until every peer has joined: the strangers met that window
    assert attempts[0] >= 1, attempts
    assert report.agreement == 1.0 and report.accuracy_mpc >= 0.95
    assert "refused a connection from 127.0.0.1" in (config.run_dir / "alice.log").read_text()
    assert "refused a connection from 127.0.0.1" in (config.run_dir / "dealer.log").read_text()


def test_a_peer_that_sends_far_ahead_is_paused_not_buffered():
    # the reader stops taking frames once MAX_QUEUED_BYTES wait unused: TCP carries the
    # pause back to the sender, whose writes block; using a frame makes room again
    from smpc import wire

    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiving, _ = server.accept()
    peer = transport.Peer("bob", receiving, timeout_s=5)
    frame = torch.arange(1 << 20, dtype=torch.int64)  # 8 MiB
    sent = [0]

    def flood() -> None:
        try:
            for _ in range(200):  # 1.6 GiB if nothing stopped it
                wire.send(sender, wire.Kind.DATA, frame)
                sent[0] += 1
        except OSError:
            pass

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    deadline, last = time.monotonic() + 60, -1
    while time.monotonic() < deadline and sent[0] != last:  # until the writer is stuck
        last = sent[0]
        time.sleep(1.0)
    try:
        assert 0 < sent[0] < 200, sent[0]
        assert transport.MAX_QUEUED_BYTES <= peer._queued <= transport.MAX_QUEUED_BYTES + frame.nbytes
        before = sent[0]
        for _ in range(4):
            assert torch.equal(peer.recv(frame), frame)
        time.sleep(1.0)
        assert sent[0] > before  # room again: the sender goes on
    finally:
        sender.close()
        receiving.close()
        server.close()


def _peer_pair(timeout_s: float) -> tuple[socket.socket, transport.Peer, list[socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiving, _ = server.accept()
    return sender, transport.Peer("bob", receiving, timeout_s=timeout_s), [sender, receiving, server]


def test_while_joining_a_peer_may_take_until_connect_s_to_start_but_not_to_finish_a_message():
    # The session's first exchange (its keys) ends the join: a peer that connected to us
    # may still be connecting to the others, so its first message may take until the
    # join's deadline; outside the join, and for a message stopped half-way, op_s holds.
    from smpc import wire

    key = torch.arange(4, dtype=torch.int64)
    sender, peer, sockets = _peer_pair(timeout_s=0.5)
    try:
        peer.joining = (time.monotonic() + 5.0, 5.0)
        threading.Timer(1.5, lambda: wire.send(sender, wire.Kind.DATA, key)).start()
        started = time.monotonic()
        assert torch.equal(peer.recv(key), key)  # 1.5 s: beyond op_s, within the join
        assert 1.4 < time.monotonic() - started < 4.0

        peer.joining = (time.monotonic() + 1.0, 1.0)
        with pytest.raises(PartyError, match=r"^party bob did not finish joining within timeouts.connect_s = 1 s$"):
            peer.recv(key)

        peer.joining = None
        started = time.monotonic()
        with pytest.raises(PartyError, match=r"^party bob sent nothing within timeouts.op_s = 0.5 s$"):
            peer.recv(key)
        assert time.monotonic() - started < 1.5

        peer.joining = (time.monotonic() + 30.0, 30.0)
        head, body = wire._frame(wire.Kind.DATA, key, bytes(16))
        sender.sendall(head + bytes(body)[:5])  # starts a message, then stops
        started = time.monotonic()
        with pytest.raises(PartyError, match=r"stopped in the middle of a message \(\d+ bytes of it arrived\)"):
            peer.recv(key)
        assert time.monotonic() - started < 3.0  # op_s (and a poll), not the join's 30 s
    finally:
        for s in sockets:
            s.close()
