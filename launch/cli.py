"""`smpc launch CONFIG [--report FILE] [--profile]`: run every party of a config on this machine."""

from __future__ import annotations

import argparse
import sys

from launch import profile
from launch.runner import run
from smpc.errors import SmpcError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc launch", description="Start every party of CONFIG on this machine.")
    parser.add_argument("config", help="YAML run configuration")
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="do not relay party output")
    parser.add_argument("--profile", action="store_true",
                        help="also print the cost profile: bytes, rounds and seconds per layer and op, largest first")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the config; print the report, or one error line per problem (exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        report = run(args.config, report_path=args.report, echo=not args.quiet)
    except SmpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: all parties stopped", file=sys.stderr)
        return 130
    print(report.summary())
    if args.profile:
        party = profile.busiest(report.parties)
        print()
        print(profile.table(report.parties[party]["layers"], party))
    if args.report:
        print(f"report written to {args.report}")
    return 0
