"""`smpc serve CONFIG [--name NAME]`: standing parties that answer clients.

With `--name`, this process is that one party (or `dealer`), as on its own host. Without
it, every party and the dealer of CONFIG start on this machine, supervised as `smpc
launch` does: when one fails the others are stopped and the root cause is printed;
SIGTERM or Ctrl-C drains every party (the queries waiting are answered) and stops them
all within `GRACE_S`.
"""

from __future__ import annotations

import argparse
import signal
import sys

from launch.processes import Child, supervise
from launch.runner import failure_message, processes_of
from smpc import keys
from smpc.model import pack
from smpc.config import Config, load_config
from smpc.errors import ConfigError, SmpcError
from smpc.runfiles import error_path

GRACE_S = 25.0  # between SIGTERM (drain) and SIGKILL
MAX_RESTARTS = 10  # per process, with serving.on_peer_loss: rejoin


def _require_serving(config: Config) -> None:
    if config.serving is None:
        raise ConfigError(f"{config.source}: serving: required by `smpc serve` (the client API's settings)")


def preflight(config: Config) -> None:
    """Refuse before starting anything: no serving section, missing TLS files, or a
    packed program without the shapes the service would run."""
    _require_serving(config)
    keys.check_identities(config, config.processes)
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
    names = config.processes
    for name in names:
        error_path(config, name).unlink(missing_ok=True)
    children = processes_of(config, names, "parties.service")
    restarts = {name: 0 for name in names}

    def restart(child: Child) -> bool:
        # with rejoin, the others wait for a process that failed: start it again
        if config.serving.on_peer_loss != "rejoin" or restarts[child.name] >= MAX_RESTARTS:
            return False
        restarts[child.name] += 1
        print(f"[serve] {child.name} ended ({child.describe_exit()}): starting it again "
              f"({restarts[child.name]} of {MAX_RESTARTS})", flush=True)
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


def main(argv: list[str] | None = None) -> int:
    """`smpc serve CONFIG [--name NAME]`: exit 0 when drained on request, 2 on a mistake in
    CONFIG or its files (one `error:` line) or when a process failed, as `smpc launch`."""
    parser = argparse.ArgumentParser(prog="smpc serve", description="Run the parties of CONFIG as a service.")
    parser.add_argument("config", help="YAML config with a serving section")
    parser.add_argument("--name", help="run only this party (or 'dealer'), as on its own host")
    parser.add_argument("--quiet", action="store_true", help="do not relay the processes' output")
    args = parser.parse_args(argv)
    if args.name == "dealer":
        from smpc.dealer.server import main as dealer_main

        try:  # else a one-off config's dealer would wait timeouts.connect_s for parties that never come
            _require_serving(load_config(args.config))
        except SmpcError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return dealer_main([args.config])
    if args.name is not None:
        from parties.service import main as service_main

        return service_main([args.config, "--name", args.name])
    try:
        config = load_config(args.config)
        return serve_all(config, echo=not args.quiet)
    except SmpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
