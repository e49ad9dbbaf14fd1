"""The `smpc` command: `smpc launch CONFIG`, `smpc party CONFIG --name NAME`."""

from __future__ import annotations

import sys

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


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's own parser."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(_versions())
        return 0
    if command == "open":
        from smpc.sealed import main as open_main

        return open_main(rest)
    if command == "launch":
        from launch.cli import main as launch_main

        return launch_main(rest)
    if command == "party":
        from parties.program import main as party_main

        return party_main(rest)
    if command == "model":
        from smpc.model_dir import main as model_main

        return model_main(rest)
    if command == "keys":
        from smpc.keys import main as keys_main

        return keys_main(rest)
    if command == "bench":
        from launch.bench import main as bench_main

        return bench_main(rest)
    if command == "serve":
        from launch.serve import main as serve_main

        return serve_main(rest)
    if command == "query":
        from smpc.serve.query import main as query_main

        return query_main(rest)
    if command == "dealer":
        from smpc.dealer.server import main as dealer_main

        return dealer_main(rest)
    print(f"smpc: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
    return 2
