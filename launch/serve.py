"""`smpc serve CONFIG`: standing parties that answer clients.

(With `--name`, the command table runs that one party, or the dealer, as on its own
host.) Every party and the dealer of CONFIG start on this machine, supervised as `smpc
launch` does: when one fails the others are stopped and the root cause is printed;
SIGTERM or Ctrl-C drains every party (the queries waiting are answered) and stops them
all within `GRACE_S`.
"""

from __future__ import annotations

import signal
import sys

from smpc.runs.processes import Child, supervise
from smpc.runs.runner import failure_message, processes_of
from smpc import keys
from smpc.model import pack
from smpc.config import Config
from smpc.errors import ConfigError
from smpc.runfiles import error_path

GRACE_S = 25.0  # between SIGTERM (drain) and SIGKILL
MAX_RESTARTS = 10  # per process, with serving.on_peer_loss: rejoin


def require_serving(config: Config) -> None:
    if config.serving is None:
        raise ConfigError(f"{config.source}: serving: required by `smpc serve` (the client API's settings)")


def preflight(config: Config) -> None:
    """Refuse before starting anything: no serving section, missing TLS files, or a
    packed program without the shapes the service would run."""
    require_serving(config)
    keys.check_identities(config, config.plan.processes)
    pack.run_buckets(config)


def _raise_interrupt(signum: int, frame: object) -> None:
    # once: a second signal must not cut the drain short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def serve_all(config: Config, echo: bool = True) -> int:
    """Run every process of `config`'s service on this machine until stopped; returns
    the exit code (0 when drained on request)."""
    preflight(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    names = config.plan.processes
    for name in names:
        error_path(config, name).unlink(missing_ok=True)
    children = processes_of(config, names, "serve")
    restarts = {name: 0 for name in names}

    def restart(child: Child) -> bool:
        # with rejoin, the others wait for a process that failed: start it again
        if config.serving.on_peer_loss != "rejoin" or restarts[child.name] >= MAX_RESTARTS:
            return False
        restarts[child.name] += 1
        print(
            f"[serve] {child.name} ended ({child.describe_exit()}): starting it again "
            f"({restarts[child.name]} of {MAX_RESTARTS})",
            flush=True,
        )
        return True

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    interrupted = False
    try:
        outcome = supervise(children, deadline_s=float("inf"), grace_s=GRACE_S, echo=echo, restart=restart)
    except KeyboardInterrupt:  # supervise has drained and stopped every child by now
        interrupted = True
        outcome = None
    if interrupted:
        print("stopped: every party drained", flush=True)
        return 0
    if outcome.failed:  # as `smpc launch`: 2 when the processes failed
        print(f"error: {failure_message(config, outcome)}", file=sys.stderr)
        return 2
    return 0
