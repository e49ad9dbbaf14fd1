"""One-round FSS comparisons against CrypTen's circuits and upstream CrypTen's TTP, from one run.

LeNet-5 (1x28x28), 2 parties, batch 1 and 64: smpc's dealer with `protocol.comparisons:
fss`, the same dealer with CrypTen's binary circuits, and upstream CrypTen 0.4.1 with its
own TTP provider (benchmarks/upstream_ttp.py: same model and execution path). Online
seconds, bytes and rounds per batch at party 0, and the dealer's side: key bytes per
party and its generation time per batch (which must stay under the online time FSS
saves).

    python benchmarks/fss_comparisons.py [--batches N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import launch_model
from upstream_ttp import run_upstream_ttp
from results_page import results_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="batches timed per cell (default 2)")
    args = parser.parse_args(argv)
    n = args.batches
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 64):
            cell = {"batch": batch}
            for mode in ("circuits", "fss"):
                report, _ = launch_model(
                    Path(tmp),
                    f"{mode} b{batch}",
                    "lenet5",
                    (1, 28, 28),
                    batch,
                    n,
                    randomness="dealer",
                    comparisons=mode,
                    truncation="local" if mode == "circuits" else None,  # circuits as upstream CrypTen runs them
                )
                alice = report.parties["alice"]
                cell[mode] = {
                    "online": report.online_s / n,
                    "mib": alice["bytes_sent"] / 2**20 / n,
                    "rounds": alice["rounds"] / n,
                    "keys_mib": alice.get("key_bytes", 0) / 2**20 / n,
                    "per_comparison": alice.get("key_bytes_per_comparison"),
                    "dealer_s": (report.dealer or {}).get("generation_s_per_batch"),
                }
            cell["ttp"] = run_upstream_ttp(2, batch, batches=n)["online_s_per_batch"]
            rows.append(cell)
            print(f"done: batch {batch}", file=sys.stderr, flush=True)
    print("LeNet-5, 2 parties, per batch at party 0 (online seconds, MiB sent, rounds); dealer: key MiB sent to each")
    print("party and its generation seconds per batch")
    print(
        f"{'batch':>5}{'fss s':>8}{'circ s':>8}{'ttp s':>8}{'fss/ttp':>9}{'fss/circ':>10}"
        f"{'fss MiB':>9}{'circ MiB':>10}{'fss rnd':>9}{'circ rnd':>10}{'keys MiB':>10}{'B/cmp':>7}{'dealer s':>10}"
    )
    for r in rows:
        f, c = r["fss"], r["circuits"]
        print(
            f"{r['batch']:>5}{f['online']:>8.3f}{c['online']:>8.3f}{r['ttp']:>8.3f}{f['online'] / r['ttp']:>9.2f}"
            f"{f['online'] / c['online']:>10.2f}{f['mib']:>9.2f}{c['mib']:>10.2f}{f['rounds']:>9.0f}{c['rounds']:>10.0f}"
            f"{f['keys_mib']:>10.1f}{f['per_comparison'] or 0:>7.0f}{f['dealer_s'] or 0:>10.3f}"
        )
    return 0


if __name__ == "__main__":
    with results_page("fss_comparisons"):
        code = main()
    sys.exit(code)
