"""No orphans: when the supervisor of `smpc serve` or `smpc launch` is killed outright
(SIGKILL: no chance to stop anyone), every process it started leaves on its own within
`timeouts.op_s` (each watches its parent: smpc.parent_watch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from smpc.serve.client import Client
from tests.harness import processes_mentioning, write_config, write_serve_config
from tests.test_serve import _stop, _wait_ready

SMPC = str(Path(sys.executable).parent / "smpc")
OP_S = 5  # the configs' timeouts.op_s


def _gone_within(config_path: Path, seconds: float) -> float:
    started = time.monotonic()
    while processes_mentioning(str(config_path)):
        assert time.monotonic() - started < seconds, processes_mentioning(str(config_path))
        time.sleep(0.2)
    return time.monotonic() - started


def test_sigkill_of_the_serve_supervisor_leaves_no_process(tmp_path):
    path = write_serve_config(tmp_path)
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([SMPC, "serve", str(path), "--quiet"], stdout=log, stderr=subprocess.STDOUT)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process)
        assert len(processes_mentioning(str(path))) == 4  # the supervisor, alice, bob, the dealer
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert _gone_within(path, OP_S + 2) <= OP_S + 2
    finally:
        client.close()
        _stop(process, path)


def test_sigkill_of_the_launch_supervisor_leaves_no_process(tmp_path):
    path = write_config(
        tmp_path, samples=360, batch_size=4, dealer=True, timeouts={"connect_s": 60, "op_s": OP_S, "run_s": 300}
    )
    process = subprocess.Popen([SMPC, "launch", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        log = tmp_path / "run" / "alice.log"
        while not (log.is_file() and "batch 1/" in log.read_text()):  # the online phase has begun
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert _gone_within(path, OP_S + 2) <= OP_S + 2
    finally:
        if process.poll() is None:
            process.kill()
        for pid in processes_mentioning(str(path)):
            os.kill(pid, signal.SIGKILL)
