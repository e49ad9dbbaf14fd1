"""Online inference time by source of correlated randomness, from one run.

LeNet-5 (1x28x28), batch 1 and 64, 2 and 3 parties (the third only computes):
smpc's trusted dealer (material prepared offline), CrypTen's local TFP provider,
and upstream CrypTen's own TTP server on the same model and execution path.

    python benchmarks/randomness_sources.py [--batches N]
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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for parties in (2, 3):
            for batch in (1, 64):
                cell = {"parties": parties, "batch": batch}
                for source in ("dealer", "local"):
                    report, _ = launch_model(
                        Path(tmp),
                        f"{source} p{parties} b{batch}",
                        "lenet5",
                        (1, 28, 28),
                        batch,
                        args.batches,
                        parties=parties,
                        randomness=source,
                        truncation="local",  # the same protocol, only the source differs
                    )
                    cell[source] = report.online_s / args.batches
                    if source == "dealer":
                        cell["offline"] = report.offline_s
                cell["ttp"] = run_upstream_ttp(parties, batch, batches=args.batches)["online_s_per_batch"]
                rows.append(cell)
                print(f"done: {parties} parties, batch {batch}", file=sys.stderr, flush=True)
    print("LeNet-5, online seconds per batch (offline: the dealer's trace + first batch, before the online phase)")
    print(
        f"{'parties':>7}{'batch':>6}{'dealer':>9}{'local':>9}{'ttp':>9}{'dealer/local':>14}{'dealer/ttp':>12}{'offline':>9}"
    )
    for r in rows:
        print(
            f"{r['parties']:>7}{r['batch']:>6}{r['dealer']:>9.3f}{r['local']:>9.3f}{r['ttp']:>9.3f}"
            f"{r['dealer'] / r['local']:>14.2f}{r['dealer'] / r['ttp']:>12.2f}{r['offline']:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    with results_page("randomness_sources"):
        code = main()
    sys.exit(code)
