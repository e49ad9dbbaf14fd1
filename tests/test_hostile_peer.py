"""A peer that holds a valid certificate and breaks the protocol inside a run.

alice runs the real party program; bob runs it too, over TLS with his real key, but
with his frame writer replaced by one that, at a random DATA frame of the run, sends
something malformed instead (garbage, a truncated or oversized frame, a frame of the
wrong kind, shape or dtype, a flood) and then holds the connection open. alice must
stop within timeouts.op_s with one line naming bob and the fault, without a
traceback and with her memory bounded.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import processes_mentioning, write_tls_config

OP_S = 6.0

# bob: the real party program with one fault injected at DATA frame number `at`
HOSTILE_BOB = r"""
import struct, sys, time
import torch
from smpc import wire

config, fault, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
honest_send, frames = wire.send, [0]

def header(kind, dtype_code, shape, length):
    return wire._HEADER.pack(wire.MAGIC, wire.VERSION, kind, dtype_code, len(shape), bytes(16), length) + struct.pack(f"<{len(shape)}Q", *shape)

def hostile_send(sock, kind, tensor, tag=bytes(16)):
    if kind != wire.Kind.DATA:
        return honest_send(sock, kind, tensor, tag)
    frames[0] += 1
    if frames[0] < at:
        return honest_send(sock, kind, tensor, tag)
    print(f"injected {fault} at frame {at} at {time.time()}", flush=True)
    if fault == "garbage":
        sock.sendall(bytes(range(256)) * 4)
    elif fault == "truncated":
        head, body = wire._frame(kind, tensor, tag)
        sock.sendall(head + bytes(body)[: max(1, len(body) // 2)])
    elif fault == "oversized":
        sock.sendall(header(int(kind), 1, [1 << 40], 8 << 40))
    elif fault == "claims_a_gigabyte":
        n = (1 << 27) - 1  # just under the limit; 1 MiB of it is sent
        sock.sendall(header(int(kind), 1, [n], 8 * n) + bytes(1 << 20))
    elif fault == "out_of_order":
        honest_send(sock, wire.Kind.HELLO, wire.json_tensor({"party": "bob", "rank": 1}))
    elif fault == "wrong_shape":
        honest_send(sock, kind, torch.zeros(tensor.numel() + 3, dtype=tensor.dtype))
    elif fault == "wrong_dtype":
        honest_send(sock, kind, torch.zeros(tensor.shape, dtype=torch.float32))
    elif fault == "flood":
        for _ in range(1200):  # 1.2 GiB of frames alice never asked for
            honest_send(sock, kind, torch.zeros(1 << 17, dtype=torch.int64))
    time.sleep(3600)  # hold the connection: alice must find the fault herself

wire.send = hostile_send
from launch.cli import main
sys.exit(main(["party", config, "--name", "bob", "--no-progress"]))
"""

FAULTS = {
    "garbage": r"party bob broke the protocol: not an smpc message \(bad magic\)",
    "truncated": r"party bob stopped in the middle of a message \(\d+ bytes of it arrived\) and sent nothing more within timeouts.op_s = 6 s",
    "oversized": r"party bob broke the protocol: message of 8796093022208 bytes exceeds the limit of 1073741824",
    "claims_a_gigabyte": r"party bob stopped in the middle of a message \(\d+ bytes of it arrived\)",
    "out_of_order": "party bob broke the protocol: sent a HELLO message in the middle of a run",
    "wrong_shape": r"party bob broke the protocol: sent a torch.int64 tensor of shape \[\d+\] where a torch.int64 tensor of shape \[[\d, ]+\] was expected",
    "wrong_dtype": r"party bob broke the protocol: sent a torch.float32 tensor of shape \[[\d, ]+\] where a torch.int64 tensor",
    "flood": r"party bob broke the protocol: sent a torch.int64 tensor of shape \[131072\] where",
}


@pytest.fixture(scope="module")
def tls_config(tmp_path_factory) -> Path:
    return write_tls_config(tmp_path_factory.mktemp("hostile"), samples=120, batch_size=60, op_s=OP_S)


def _wait(pid: int, timeout: float) -> tuple[int, int, float] | None:
    # (exit status, peak RSS in KiB, when) of one child, or None if still running
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage.ru_maxrss, time.time()
        time.sleep(0.05)
    return None


def _alice_stops(
    config: Path, tmp_path: Path, bob_script: str, bob_args: list[str], expected: str, peak_mib: int
) -> None:
    """alice's real party program against bob's `bob_script`, which prints "injected ...
    at <time>" when it breaks the protocol: alice must stop within OP_S of that, with one
    error line matching `expected`, no traceback, her memory under `peak_mib`, and
    nothing of the run left."""
    alice_err = (tmp_path / "alice.err").open("w")
    bob_out = (tmp_path / "bob.out").open("w")
    alice = subprocess.Popen(
        [sys.executable, "-m", "launch", "party", str(config), "--name", "alice", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=alice_err,
    )
    bob = subprocess.Popen(
        [sys.executable, "-c", bob_script, str(config), *bob_args], stdout=bob_out, stderr=subprocess.STDOUT
    )
    ended = None
    try:
        ended = _wait(alice.pid, 180)
        assert ended is not None, f"alice did not stop ({' '.join(bob_args)})"
        status, peak_kib, ended_at = ended
        injected = re.search(r"injected .* at ([\d.]+)$", (tmp_path / "bob.out").read_text(), re.MULTILINE)
        assert injected, (tmp_path / "bob.out").read_text()[-2000:]
        assert ended_at - float(injected.group(1)) < OP_S + 3, f"alice took {ended_at - float(injected.group(1)):.1f} s"
        assert os.waitstatus_to_exitcode(status) != 0
        err = (tmp_path / "alice.err").read_text()
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and re.search(expected, lines[0]), err
        assert peak_kib < peak_mib * 1024, f"alice's memory peaked at {peak_kib // 1024} MiB"
    finally:
        bob.kill()
        bob.wait(10)
        if ended is None:  # still running (a reaped one is not signalled)
            alice.kill()
            alice.wait(10)
        alice_err.close()
        bob_out.close()
    assert processes_mentioning(str(config)) == []


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_certified_peer_breaking_the_protocol_mid_run_stops_the_honest_party(tls_config, tmp_path, fault):
    at = random.Random(fault).randint(1, 40)  # which of bob's DATA frames to alice is the bad one (1: the agreement)
    _alice_stops(tls_config, tmp_path, HOSTILE_BOB, [fault, str(at)], FAULTS[fault], 900)


# -- the two-party offline phase (randomness: two-party): a peer whose messages there are
# malformed, of the wrong size, or never come

# bob: the real party program whose `at`-th exchange of the offline phase is replaced
# (1, 2: the base OTs' points; 3: the public keys; 4 on: the material, the first a ciphertext batch)
HOSTILE_OFFLINE_BOB = r"""
import secrets, sys, time
from smpc.twoparty import link

config, fault, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
honest_exchange, count = link.Link.exchange, [0]

def hostile_exchange(self, ours, theirs):
    count[0] += 1
    if count[0] != at:
        return honest_exchange(self, ours, theirs)
    print(f"injected {fault} at exchange {at} at {time.time()}", flush=True)
    size = len(bytes(ours))
    if fault == "random_bytes":  # the right size, not a point or a ciphertext
        honest_exchange(self, secrets.token_bytes(size), theirs)
    elif fault == "short":
        honest_exchange(self, bytes(size - 1), theirs)
    time.sleep(3600)  # "silent" sends nothing; every fault then holds the connection

link.Link.exchange = hostile_exchange
from launch.cli import main
sys.exit(main(["party", config, "--name", "bob", "--no-progress"]))
"""

OFFLINE_FAULTS = {
    (
        "random_bytes",
        1,
    ): r"party bob broke the protocol in the two-party preprocessing \(base OTs\): .*not a valid point",
    ("random_bytes", 3): r"party bob broke the protocol in the two-party preprocessing \(public keys\): ",
    ("random_bytes", 4): r"party bob broke the protocol in the two-party preprocessing \([a-z ]+\): ",
    (
        "short",
        2,
    ): r"party bob broke the protocol: sent a torch.uint8 tensor of shape \[\d+\] where a torch.uint8 tensor",
    ("silent", 5): r"party bob sent nothing within timeouts.op_s = 6 s",
}


@pytest.fixture(scope="module")
def two_party_config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile-offline")
    return write_tls_config(tmp, samples=60, batch_size=60, op_s=OP_S, randomness="two-party")


@pytest.mark.parametrize("fault,at", sorted(OFFLINE_FAULTS), ids=lambda v: str(v))
def test_a_peer_breaking_the_two_party_offline_phase_stops_the_honest_party(two_party_config, tmp_path, fault, at):
    _alice_stops(two_party_config, tmp_path, HOSTILE_OFFLINE_BOB, [fault, str(at)], OFFLINE_FAULTS[(fault, at)], 1500)
