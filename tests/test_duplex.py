"""A TLS connection read by one thread while another writes (smpc.duplex): real
certificates, real sockets. Without it, 19 of 140 fresh connections here lost the
first messages after the handshake (the CI failure where two serving parties each waited
60 s for the other's first message)."""

from __future__ import annotations

import hashlib
import queue
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from smpc import keys, transport
from smpc.duplex import Duplex


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> tuple:
    directory: Path = tmp_path_factory.mktemp("keys")
    keys.create_ca(directory)
    for name in ("alice", "bob"):
        keys.issue(directory, name)
    ca = directory / "ca.pem"
    server = transport.server_context(ca, directory / "alice.pem", directory / "alice.key")
    client = transport.client_context(ca, directory / "bob.pem", directory / "bob.key")
    return server, client


def _tls_pair(contexts: tuple, listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    server_ctx, client_ctx = contexts
    accepted: queue.Queue = queue.Queue()

    def accept() -> None:
        raw, _ = listener.accept()
        try:
            accepted.put(server_ctx.wrap_socket(raw, server_side=True))
        except Exception as exc:  # shown by the test's get() below
            accepted.put(exc)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = client_ctx.wrap_socket(
        socket.create_connection(listener.getsockname(), timeout=10), server_hostname="alice"
    )
    server = accepted.get(timeout=10)
    assert not isinstance(server, Exception), server
    return server, client


def _read_into(end: Duplex, size: int, out: queue.Queue) -> None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    try:
        while got < size:
            k = end.recv_into(view[got:], size - got)
            if k == 0:
                raise ConnectionError("closed")
            got += k
        out.put(bytes(buffer))
    except Exception as exc:
        out.put(exc)


def test_the_first_messages_after_the_handshake_arrive_while_each_end_is_being_read(contexts):
    # the moment the parties' first exchange happens: each end read by its own thread,
    # written at once by another; with plain blocking SSL sockets some are never delivered
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for i in range(200):
            ends = [Duplex(s) for s in _tls_pair(contexts, listener)]
            arrived: list[queue.Queue] = [queue.Queue(), queue.Queue()]
            for end, out in zip(ends, arrived):
                threading.Thread(target=_read_into, args=(end, 40, out), daemon=True).start()
            ends[0].sendall(b"a" * 40)
            ends[1].sendall(b"b" * 40)
            try:
                assert arrived[0].get(timeout=10) == b"b" * 40, f"connection {i}: alice"
                assert arrived[1].get(timeout=10) == b"a" * 40, f"connection {i}: bob"
            except queue.Empty:
                pytest.fail(f"connection {i}: a message sent right after the handshake did not arrive within 10 s")
            for end in ends:
                end.close()


def test_large_messages_cross_in_both_directions_at_once(contexts):
    size = 24 << 20  # more than any socket buffer: both writers must wait for the readers
    payloads = [torch.randint(0, 256, (size,), dtype=torch.uint8).numpy().tobytes() for _ in range(2)]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ends = [Duplex(s) for s in _tls_pair(contexts, listener)]
        arrived: list[queue.Queue] = [queue.Queue(), queue.Queue()]
        for end, out in zip(ends, arrived):
            threading.Thread(target=_read_into, args=(end, size, out), daemon=True).start()
        writer = threading.Thread(target=ends[1].sendall, args=(payloads[1],), daemon=True)
        writer.start()
        ends[0].sendall(payloads[0])
        writer.join(timeout=60)
        digest = [hashlib.sha256(p).hexdigest() for p in payloads]
        assert hashlib.sha256(arrived[1].get(timeout=60)).hexdigest() == digest[0]
        assert hashlib.sha256(arrived[0].get(timeout=60)).hexdigest() == digest[1]
        for end in ends:
            end.close()


def test_a_wait_keeps_the_timeout_and_a_close_ends_it(contexts):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server, client = _tls_pair(contexts, listener)
        server.settimeout(0.3)
        end = Duplex(server)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            end.recv_into(memoryview(bytearray(8)), 8)
        assert 0.25 < time.monotonic() - started < 2.0

        end.settimeout(None)  # waits for ever, until another thread closes the connection
        out: queue.Queue = queue.Queue()
        threading.Thread(target=_read_into, args=(end, 8, out), daemon=True).start()
        time.sleep(0.5)
        assert out.empty()
        end.close()
        assert isinstance(out.get(timeout=3), OSError)
        with pytest.raises(OSError, match="closed"):
            end.sendall(b"x")
        client.close()


def test_a_peer_that_closes_ends_the_read_with_zero_bytes(contexts):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server, client = _tls_pair(contexts, listener)
        end = Duplex(server)
        client.sendall(b"bye")
        client.close()
        assert end.recv_into(memoryview(bytearray(8)), 8) == 3
        assert end.recv_into(memoryview(bytearray(8)), 8) == 0
        end.close()
