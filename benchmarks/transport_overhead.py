"""TLS against gloo, from one run: LeNet-5, batch 1 and 64, 2 parties, local randomness.

Both transports run the same parties and computation; the table gives the online time
per batch, the bytes each party sent, and the TLS/gloo ratios. Bytes are as counted by
each transport: CrypTen's estimate (8 bytes per element) over gloo, the bytes really
written to the TLS sockets (framing included) over TLS.

    python benchmarks/transport_overhead.py [--batches N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import launch_model
from results_page import results_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="batches timed per cell (default 3)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 64):
            cell = {"batch": batch}
            for transport in ("gloo", "tls"):
                report, _ = launch_model(
                    Path(tmp), f"{transport} b{batch}", "lenet5", (1, 28, 28), batch, args.batches, transport=transport
                )
                cell[transport] = report.online_s / args.batches
                cell[f"{transport}_mib"] = report.parties["alice"]["bytes_sent"] / args.batches / 2**20
            rows.append(cell)
            print(f"done: batch {batch}", file=sys.stderr, flush=True)
    print("LeNet-5, 2 parties; online seconds and MiB sent by alice, per batch")
    print(f"{'batch':>5}{'gloo s':>9}{'tls s':>9}{'tls/gloo':>10}{'gloo MiB':>10}{'tls MiB':>10}")
    for r in rows:
        print(
            f"{r['batch']:>5}{r['gloo']:>9.3f}{r['tls']:>9.3f}{r['tls'] / r['gloo']:>10.2f}"
            f"{r['gloo_mib']:>10.2f}{r['tls_mib']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    with results_page("transport_overhead"):
        code = main()
    sys.exit(code)
