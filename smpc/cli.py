"""The `smpc` command: `smpc launch CONFIG`, `smpc party CONFIG --name NAME`, ...

Every subcommand exits alike: 0 when done, 2 on the user's mistake or a failed run (one
`error:` line saying what to do), 1 on an internal error (with its traceback), 130 when
interrupted."""

from __future__ import annotations

import sys
import traceback
from typing import Callable

USAGE = """usage: smpc COMMAND ...

commands:
  launch CONFIG [--report FILE]   run every party of CONFIG on this machine
  party CONFIG --name NAME        run exactly one party (one per host)
  dealer CONFIG                   run the trusted dealer of CONFIG (randomness: dealer)
  serve CONFIG [--name NAME]      standing parties answering clients (all here, or one party)
  query CONFIG --client NAME --data FILE [--rows N] [--concurrency C] [--report FILE]
                                  query a running service with the rows of a data file
  keys init|add|show|rotate DIR ... consortium CA and per-party (and client) keys and certificates
  keys request|sign|revoke ...    a member's own key and request; the CA holder signs, revokes
  model pack|sign|calibrate|verify ...  signed model directories
  open FILE --key KEY [--out FILE]  decrypt a sealed file of your own (outputs, shares' metadata)
  --version                       versions of smpc, CrypTen and torch
  bench STUDY [--out DIR]         measure a study (a matrix of settings): tables and plots

exit status: 0 done; 2 a mistake to correct or a failed run (the `error:` line says what); 1 an internal error
"""


def _versions() -> str:
    # read from the installed packages' metadata: importing CrypTen is slow and noisy
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"smpc {of('smpc')} (CrypTen {of('crypten')}, torch {of('torch')})"


EXIT_INTERNAL = 1  # a bug or an environment failure: the traceback is printed
EXIT_USAGE = 2  # the user's mistake (SmpcError, or argparse's usage error): one `error:` line


def _guarded(entry: Callable[[list[str]], int], rest: list[str]) -> int:
    """Run a subcommand so that every one exits alike: what it returns; 2 with one
    `error:` line for a user's mistake it let through; 1 for anything unexpected."""
    from smpc.errors import SmpcError

    try:
        return entry(rest)
    except SmpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}): please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's own parser (see _guarded for the exit codes)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(_versions())
        return 0
    entry = _entry(command)
    if entry is None:
        print(f"smpc: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
        return EXIT_USAGE
    return _guarded(entry, rest)


def _entry(command: str) -> Callable[[list[str]], int] | None:
    # imported on demand: each subcommand's imports (CrypTen, torch) are slow
    if command == "open":
        from smpc.sealed import main as open_main

        return open_main
    if command == "launch":
        from launch.cli import main as launch_main

        return launch_main
    if command == "party":
        from parties.program import main as party_main

        return party_main
    if command == "model":
        from smpc.model_dir import main as model_main

        return model_main
    if command == "keys":
        from smpc.keys import main as keys_main

        return keys_main
    if command == "bench":
        from launch.bench import main as bench_main

        return bench_main
    if command == "serve":
        from launch.serve import main as serve_main

        return serve_main
    if command == "query":
        from smpc.serve.query import main as query_main

        return query_main
    if command == "dealer":
        from smpc.dealer.server import main as dealer_main

        return dealer_main
    return None
