"""Runs always end: a killed process, a party or dealer that never comes, all bounded.

Every kill test checks three things: the error names the victim first, every other
process is gone, and it all happened within the bound.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness import processes_mentioning, write_config
from launch import load_config, run
from smpc.errors import PartyError

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]
BOUND_S = 30


def _pid_of(config_path: Path, name: str) -> int:
    marker = b"launch\x00dealer" if name == "dealer" else f"--name\x00{name}\x00".encode()
    for pid in processes_mentioning(str(config_path)):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError(f"{name} is not running")


def _kill_during_inference(tmp_path: Path, victim: str, rng: random.Random) -> None:
    config = load_config(write_config(tmp_path, samples=240, batch_size=4, helpers=1, dealer=True))
    outcome: dict = {}

    def launch_it():
        try:
            run(config, echo=False)
            outcome["error"] = "the run succeeded"
        except PartyError as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # e.g. a preflight error: fail fast, with its reason
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=launch_it)
    thread.start()
    log = config.run_dir / "alice.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "\nbatch 1/" in log.read_text()):
        assert "ended" not in outcome, outcome.get("error")  # the run ended before the kill
        time.sleep(0.1)  # inference is under way once the first batch's line is written
    time.sleep(rng.uniform(0.0, 2.0))
    os.kill(_pid_of(config.source, victim), signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=BOUND_S + 60)
    assert not thread.is_alive(), "the launcher did not return"
    assert outcome["ended"] - killed_at < BOUND_S
    assert outcome["error"].splitlines()[0].startswith(f"party {victim} failed (signal SIGKILL)"), outcome["error"]
    assert processes_mentioning(str(config.source)) == []


@pytest.mark.parametrize("victim", ["alice", "bob", "helper0"])
def test_kill_a_party_at_a_random_moment(tmp_path, victim):
    _kill_during_inference(tmp_path, victim, random.Random(victim))


@pytest.mark.parametrize("trial", range(2))
def test_kill_the_dealer_at_a_random_moment(tmp_path, trial):
    _kill_during_inference(tmp_path, "dealer", random.Random(100 + trial))


def _run_alone(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(SMPC + argv, capture_output=True, text=True, timeout=timeout)
    result.elapsed = time.monotonic() - started
    return result


def test_a_party_that_never_comes_is_named(tmp_path):
    config = write_config(tmp_path, timeouts={"connect_s": 3, "op_s": 5, "run_s": 60})
    result = _run_alone(["party", str(config), "--name", "alice"])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: party bob did not join within timeouts.connect_s = 3 s"


def test_a_missing_first_party_is_named_by_the_others(tmp_path):
    config = write_config(tmp_path, timeouts={"connect_s": 3, "op_s": 5, "run_s": 60})
    result = _run_alone(["party", str(config), "--name", "bob"])
    assert result.returncode == 2
    host_port = result.stderr.split("rendezvous at ")[1].split(")")[0]
    assert result.stderr.strip() == (
        f"error: party alice (the rendezvous at {host_port}) did not answer within timeouts.connect_s = 3 s"
    )


def test_a_dealer_that_never_comes_is_named(tmp_path):
    config = write_config(tmp_path, dealer=True, timeouts={"connect_s": 3, "op_s": 5, "run_s": 60})
    dealer = load_config(config).dealer
    procs = [
        subprocess.Popen(SMPC + ["party", str(config), "--name", n], stderr=subprocess.PIPE, text=True)
        for n in ("alice", "bob")
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors):
        assert p.returncode == 2
        assert (
            err.strip()
            == f"error: the dealer at {dealer.host}:{dealer.port} did not answer within timeouts.connect_s = 3 s"
        )


def test_dealer_names_the_parties_that_never_connect(tmp_path):
    config = write_config(tmp_path, dealer=True, helpers=1, timeouts={"connect_s": 3, "op_s": 5, "run_s": 60})
    result = _run_alone(["dealer", str(config)])
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: dealer: parties alice, bob, helper0 did not connect within timeouts.connect_s = 3 s"
    )


def test_without_a_launcher_the_survivors_exit_on_their_own(tmp_path):
    # one process per party, as on separate hosts: bob is killed mid-inference, and
    # alice and the helper must notice and exit by themselves within the op timeout
    config = write_config(
        tmp_path, samples=360, batch_size=2, helpers=1, timeouts={"connect_s": 60, "op_s": 5, "run_s": 120}
    )
    procs = {
        name: subprocess.Popen(
            SMPC + ["party", str(config), "--name", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for name in ("alice", "bob", "helper0")
    }
    computing = threading.Event()

    def watch_alice():
        # a log gets one whole line per batch (no progress-bar frames)
        for line in iter(procs["alice"].stdout.readline, b""):
            assert b"\r" not in line
            if line.startswith(b"batch 1/"):
                computing.set()

    threading.Thread(target=watch_alice, daemon=True).start()
    try:
        assert computing.wait(timeout=90), "inference never started"
        assert procs["bob"].poll() is None, "bob ended before it could be killed"
        procs["bob"].kill()
        killed_at = time.monotonic()
        for name in ("alice", "helper0"):
            procs[name].wait(timeout=BOUND_S + 30)
            assert procs[name].returncode != 0
        assert time.monotonic() - killed_at < BOUND_S
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_of_any_launcher_child_at_any_moment_of_a_demo_run(tmp_path, trial):
    # the demo's settings (360 digits, batch 60, the dealer): a child is killed at a random
    # moment from 0.5 to 9 s after `smpc launch` starts: start-up, offline phase, online
    # batches, reveal or teardown. The launcher exits non-zero within 40 s, nothing is left.
    rng = random.Random(1000 + trial)
    config = write_config(tmp_path, samples=360, batch_size=60, dealer=True)
    moment = 0.5 + (trial + rng.random()) * 8.5 / 3  # each trial in its own third of the run
    while True:
        launcher = subprocess.Popen(
            SMPC + ["launch", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        started = time.monotonic()
        victim, pid = None, None
        while time.monotonic() - started < moment and launcher.poll() is None:
            time.sleep(0.05)
        alive = []
        while not alive and launcher.poll() is None:  # too early: the first child to start is the victim
            for name in ("alice", "bob", "dealer"):
                try:
                    alive.append((name, _pid_of(config, name)))
                except AssertionError:
                    continue
            time.sleep(0.0 if alive else 0.05)
        if alive and launcher.poll() is None:
            victim, pid = rng.choice(alive)
            os.kill(pid, signal.SIGKILL)
            break
        launcher.wait(timeout=60)  # the run ended (or its children not yet started): try earlier
        moment = max(0.5, moment * 0.6) if launcher.returncode == 0 else moment + 0.3
    killed_at = time.monotonic()
    _, err = launcher.communicate(timeout=40)
    assert time.monotonic() - killed_at < 40
    assert launcher.returncode != 0, f"{victim} killed at {moment:.1f} s, yet the launcher exited 0"
    assert "Traceback" not in err and err.startswith("error: "), err
    assert victim in err.splitlines()[0], (victim, err)
    assert processes_mentioning(str(config)) == []
