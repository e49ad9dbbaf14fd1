"""MPC vs plaintext inference time, with bytes and rounds per party, from one run.

Each setting launches real party processes (2 parties, gloo, local randomness: the
same for every row, so the ratios compare) via
the launcher, and times the same model in plain PyTorch in this process (one
thread, like each party). The machine is shared and noisy: read the ratios, and
compare figures only within one run of this script.

    python benchmarks/inference_overhead.py [--batches N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import launch_model
from results_page import results_page

ROOT = Path(__file__).resolve().parent.parent

# (label, architecture, input shape, batch size, weights file or None for random)
SETTINGS = [
    ("lenet5 b=1", "lenet5", (1, 28, 28), 1, None),
    ("lenet5 b=64", "lenet5", (1, 28, 28), 64, None),
    ("digits_cnn b=64", "digits_cnn", (1, 8, 8), 64, ROOT / "models" / "digits_cnn.safetensors"),
]


def plaintext_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median seconds of one forward pass on one thread."""
    model.eval()
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def bench(label: str, architecture: str, shape: tuple, batch: int, weights: Path | None, batches: int, work: Path):
    report, model = launch_model(work, label, architecture, shape, batch, batches, weights=weights)
    mpc = report.online_s / batches
    plain = plaintext_seconds(model, torch.rand(batch, *shape))
    alice, bob = report.parties["alice"], report.parties["bob"]
    return {
        "setting": label,
        "mpc_s": mpc,
        "plain_s": plain,
        "ratio": mpc / plain,
        "MiB_alice": alice["bytes_sent"] / batches / 2**20,
        "MiB_bob": bob["bytes_sent"] / batches / 2**20,
        "rounds": alice["rounds"] / batches,
        "max_err": report.max_abs_error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="batches per setting (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in SETTINGS:
            rows.append(bench(*setting, batches=args.batches, work=Path(tmp)))
            print(f"done: {setting[0]}", file=sys.stderr, flush=True)
    print("per batch; bytes and rounds per party as counted by CrypTen (8 bytes per ring element)")
    print(
        f"{'setting':<18}{'MPC s':>10}{'plain s':>12}{'MPC/plain':>12}{'MiB alice':>11}{'MiB bob':>10}{'rounds':>8}{'max err':>10}"
    )
    for r in rows:
        print(
            f"{r['setting']:<18}{r['mpc_s']:>10.3f}{r['plain_s']:>12.6f}{r['ratio']:>12.0f}"
            f"{r['MiB_alice']:>11.2f}{r['MiB_bob']:>10.2f}{r['rounds']:>8.0f}{r['max_err']:>10.4f}"
        )
    return 0


if __name__ == "__main__":
    with results_page("inference_overhead"):
        code = main()
    sys.exit(code)
