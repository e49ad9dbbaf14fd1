"""Start party processes, relay their output, and stop them all when one fails.

Guarantees: every wait is bounded; when any process fails (non-zero exit or a
signal) the others are terminated, then killed after a grace period; on any exit
path (success, failure, timeout, Ctrl-C) no child is left running.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from smpc import parent_watch


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    stopped_by_us: bool = False
    relay: threading.Thread | None = field(default=None, repr=False)
    waiter: threading.Thread | None = field(default=None, repr=False)

    def _wait(self) -> None:
        # a thread per child notes the moment it exits: the first to fail is the root cause
        process = self.process
        if process is None:  # the waiter thread starts after the process
            raise RuntimeError(f"{self.name}: waited for before it was started")
        self.exit_code = process.wait()
        self.ended_at = time.monotonic()

    def describe_exit(self) -> str:
        """'exit code 2' or 'signal SIGKILL'."""
        code = self.exit_code
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"


@dataclass
class Outcome:
    """How a supervised group ended: `failed` lists failures, root cause first."""

    children: list[Child]
    failed: list[Child]
    timed_out: bool


def _relay(child: Child, stream: io.BufferedReader, echo: bool, lock: threading.Lock) -> None:
    # Lines end at \n or \r (progress bars redraw with \r): each is prefixed on the console.
    with open(child.log_path, "ab") as log:
        pending = b""
        for chunk in iter(lambda: stream.read1(4096), b""):
            log.write(chunk)
            log.flush()
            pending += chunk.replace(b"\r", b"\n")
            *lines, pending = pending.split(b"\n")
            if echo:
                with lock:
                    for line in lines:
                        if line.strip():
                            sys.stdout.write(f"[{child.name}] {line.decode(errors='replace')}\n")
                    sys.stdout.flush()
        if echo and pending.strip():
            with lock:
                sys.stdout.write(f"[{child.name}] {pending.decode(errors='replace')}\n")


def _signal_group(child: Child, sig: int) -> None:
    if child.process is None:
        return
    try:
        os.killpg(child.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _start(child: Child, env: dict[str, str], echo: bool, lock: threading.Lock) -> None:
    child.exit_code = child.ended_at = None
    child.process = subprocess.Popen(
        child.argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    child.relay = threading.Thread(target=_relay, args=(child, child.process.stdout, echo, lock), daemon=True)
    child.relay.start()
    child.waiter = threading.Thread(target=child._wait, daemon=True)
    child.waiter.start()


def supervise(
    children: list[Child],
    deadline_s: float,
    grace_s: float = 5.0,
    echo: bool = True,
    restart: Callable[[Child], bool] | None = None,
) -> Outcome:
    """Run `children` to completion or first failure.

    Args:
        children: processes to start (each in its own session, output to its log).
        deadline_s: bound on the whole run; past it everything is stopped.
        grace_s: time between SIGTERM and SIGKILL when stopping the others.
        echo: relay output to the console with a `[name]` prefix.
        restart: asked about each child that fails; True starts it again instead of
            stopping the others (a service whose parties rejoin).

    Returns:
        The Outcome; the root cause is the first process to fail.
    """
    lock = threading.Lock()
    # each child watches this process and leaves when it is gone (smpc.parent_watch)
    env = parent_watch.supervised_env(dict(os.environ, PYTHONUNBUFFERED="1"))
    timed_out = False
    try:
        for child in children:
            child.log_path.parent.mkdir(parents=True, exist_ok=True)
            child.log_path.write_bytes(b"")
            _start(child, env, echo, lock)
        end = time.monotonic() + deadline_s
        while True:
            ended = [c for c in children if c.ended_at is not None]
            failed = [c for c in ended if c.exit_code != 0]
            if failed and restart is not None and all(restart(c) for c in failed):
                for child in failed:
                    if child.relay is not None:
                        child.relay.join(timeout=5)
                    _start(child, env, echo, lock)
                continue
            if failed or len(ended) == len(children):
                break
            if time.monotonic() > end:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        _stop_all(children, grace_s)
    for child in children:
        for thread in (child.waiter, child.relay):
            if thread is not None:
                thread.join(timeout=5)
    # root cause first: failures in the order the processes ended
    failed = sorted(
        (c for c in children if c.exit_code not in (0, None) and not c.stopped_by_us),
        key=lambda c: c.ended_at or 0,
    )
    return Outcome(children, failed, timed_out)


def _stop_all(children: list[Child], grace_s: float) -> None:
    alive = [
        (c, c.process) for c in children if c.process is not None and c.ended_at is None and c.process.poll() is None
    ]
    for child, _ in alive:
        child.stopped_by_us = True
        _signal_group(child, signal.SIGTERM)
    end = time.monotonic() + grace_s
    for child, process in alive:
        try:
            process.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            process.wait(timeout=5)
    for child in children:
        if child.process is not None:
            # a party may have started helpers in its session: make sure none survive
            _signal_group(child, signal.SIGKILL)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, and never one this process handed out
    before: the kernel may offer a port again once its probe is closed, and the ports of
    one config must differ."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free TCP port on 127.0.0.1 that was not handed out already")
