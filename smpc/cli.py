"""The `smpc` command: `smpc launch CONFIG`, `smpc party CONFIG --name NAME`."""

from __future__ import annotations

import sys

USAGE = """usage: smpc COMMAND ...

commands:
  launch CONFIG [--report FILE]   run every party of CONFIG on this machine
  party CONFIG --name NAME        run exactly one party (one per host)
  dealer CONFIG                   run the trusted dealer of CONFIG (randomness: dealer)
  keys init|show|rotate DIR ...   consortium CA and per-party keys and certificates
  model pack|sign|verify ...      signed model directories
  bench STUDY [--out DIR]         measure a study (a matrix of settings): tables and plots
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's own parser."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
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
    if command == "dealer":
        from smpc.dealer import main as dealer_main

        return dealer_main(rest)
    print(f"smpc: unknown command {command!r}\n{USAGE}", file=sys.stderr, end="")
    return 2
