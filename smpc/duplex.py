"""A connection that one thread reads while others write: the TLS object is never used
by two threads at once.

OpenSSL forbids concurrent calls on one SSL object, SSL_read in one thread and SSL_write
in another included (openssl/openssl#20446, #16400), and Python's ssl module takes no
lock of its own. A party's connection to each peer is read by a background thread while
the protocol sends from the main thread, and a service's dealer connection is read while
it is pinged. Used blocking from both sides, such a connection sometimes never delivers
the first messages after the handshake, or aborts the process: in TLS 1.3 the client
returns from its handshake before it has read the server's last records, which the
reading thread then processes while the writing one encrypts. So the socket is made
non-blocking, every call into it is made under one lock, and the waits for the socket
happen outside the lock (with poll): a reader waiting for data never holds up a writer.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

_CHUNK = 1 << 20  # bytes handed to one send: the lock is held for one non-blocking call
_SLICE_S = 1.0  # a wait is polled in slices, so that a close from another thread is seen


class Duplex:
    """`sock` (a TLS or plain socket), safe for one reading thread and writing threads
    that take turns (a writer's lock is the caller's). Waits keep the socket's timeout
    at wrap time: None waits for ever, a number raises TimeoutError after that long
    without progress, as a blocking socket would."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout_s = sock.gettimeout()
        self._lock = threading.Lock()
        self._closed = False
        sock.setblocking(False)

    def settimeout(self, timeout_s: float | None) -> None:
        """The bound of each later wait (the socket itself stays non-blocking)."""
        self._timeout_s = timeout_s

    def recv_into(self, view: memoryview, nbytes: int, /) -> int:
        """Up to `nbytes` bytes into `view`; 0 when the peer closed the connection."""
        started = time.monotonic()
        while True:
            with self._lock:
                self._check_open()
                try:
                    return self._sock.recv_into(view, nbytes)
                except (ssl.SSLWantReadError, BlockingIOError):
                    events = select.POLLIN
                except ssl.SSLWantWriteError:  # TLS may answer a peer's record while reading
                    events = select.POLLOUT
            self._wait(events, started)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """All of `data`, or an OSError (TimeoutError when the socket's timeout passes
        without progress)."""
        view = memoryview(data).cast("B")
        started = time.monotonic()
        while view:
            chunk = view[:_CHUNK]  # after a "want", the same bytes again, as OpenSSL requires
            with self._lock:
                self._check_open()
                try:
                    sent = self._sock.send(chunk)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    sent, events = 0, select.POLLOUT
                except ssl.SSLWantReadError:  # only while the reader has not caught up: retry soon
                    sent, events = 0, 0
            if sent:
                view, started = view[sent:], time.monotonic()
            else:
                self._wait(events, started)

    def close(self) -> None:
        """Close the socket; a thread waiting on it gets an OSError within a second."""
        with self._lock:
            self._closed = True
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise OSError("the connection was closed")

    def _wait(self, events: int, started: float) -> None:
        if self._timeout_s is not None and time.monotonic() - started >= self._timeout_s:
            raise TimeoutError("timed out")
        if not events:
            time.sleep(0.001)
            return
        slice_s = _SLICE_S
        if self._timeout_s is not None:
            slice_s = min(slice_s, max(0.0, started + self._timeout_s - time.monotonic()))
        with self._lock:
            self._check_open()
            fd = self._sock.fileno()
        poller = select.poll()
        poller.register(fd, events)
        poller.poll(slice_s * 1000)
