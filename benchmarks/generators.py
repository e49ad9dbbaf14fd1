"""What the secure generator costs: AES-256-CTR (smpc.protocols.csprng) against the
Mersenne Twister of torch.Generator that CrypTen used, from one run.

Measures both generators' fill rate for ring elements (int64) on one thread, then runs
the digits demo's 360 rows (2 parties, batch 60, TLS off) with local randomness (every
party draws its own triples: the most randomness a run needs) and with the dealer, and
prints the bytes each party drew and the share of its online time that drawing them
takes with each generator.

    python benchmarks/generators.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import launch_model
from smpc.protocols import csprng

from results_page import results_page

ROOT = Path(__file__).resolve().parent.parent


def fill_rate(draw, elements: int = 1 << 20, repeats: int = 10) -> float:
    """Bytes per second of `draw(elements)`, best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        draw(elements)
        best = min(best, time.perf_counter() - started)
    return 8 * elements / best


def main() -> int:
    torch.set_num_threads(1)
    aes = csprng.AesCtrGenerator()
    mt = torch.Generator().manual_seed(1)
    aes_rate = fill_rate(lambda n: aes.ring((n,)))
    mt_rate = fill_rate(lambda n: torch.randint(-(2**63), 2**63 - 1, (n,), generator=mt, dtype=torch.long))
    print(
        f"fill rate, ring elements, one thread: AES-256-CTR {aes_rate / 2**20:.0f} MiB/s, "
        f"Mersenne Twister {mt_rate / 2**20:.0f} MiB/s (ratio {aes_rate / mt_rate:.2f})"
    )
    weights = ROOT / "models" / "digits_cnn.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        for randomness in ("local", "dealer"):
            report, _ = launch_model(
                Path(tmp),
                f"digits {randomness}",
                "digits_cnn",
                (1, 8, 8),
                60,
                6,
                randomness=randomness,
                weights=weights,
                truncation="local",
            )
            for name in report.parties:
                record = json.loads((Path(tmp) / "runs" / f"digits_{randomness}" / f"{name}.result.json").read_text())
                drawn, online = record["random_bytes"], record["online_s"]
                # every draw of the run (sharing the model, the online phase) against the online time: an upper bound
                print(
                    f"{randomness:>6} {name:<6} drew {drawn / 2**20:7.1f} MiB in the run; drawing it all takes "
                    f"{100 * drawn / aes_rate / online:.2f}% of its online {online:.2f} s with AES-CTR, "
                    f"{100 * drawn / mt_rate / online:.2f}% with MT"
                )
    return 0


if __name__ == "__main__":
    with results_page("generators"):
        code = main()
    sys.exit(code)
