"""Soak: many consecutive 3-party runs over TLS with the dealer (the digits CNN on 24
held-out digits), as a long-lived deployment would see them. Reports stalls (runs that
fail or take more than 3x the median: 0 expected), the slowest run, and memory growth
(the launcher's resident memory, and the parties' peak, first runs against last).

    .venv/bin/python benchmarks/soak.py [--runs 200]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from results_page import results_page

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    # this process's resident memory now (Linux: /proc/self/statm, in pages)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from launch import load_config, run
    from smpc.runs.processes import free_port
    from smpc import artifacts, keys
    from smpc.errors import SmpcError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smpc-soak-"))
    keys.create_ca(work / "keys")
    for name in ("alice", "bob", "carol", "dealer"):
        keys.issue(work / "keys", name)
    full = artifacts.load_data(ROOT / "data" / "digits-test.safetensors", (1, 8, 8))
    artifacts.save_data(work / "data.safetensors", full.inputs[:24], full.labels[:24])
    walls, failures, party_peak, launcher_rss = [], [], [], []
    for i in range(args.runs):
        doc = {
            "version": 1,
            "parties": [
                {
                    "name": "alice",
                    "host": "127.0.0.1",
                    "port": free_port(),
                    "roles": ["data_owner", "output"],
                    "data": str(work / "data.safetensors"),
                },
                {
                    "name": "bob",
                    "host": "127.0.0.1",
                    "port": free_port(),
                    "roles": ["model_owner"],
                    "weights": str(ROOT / "models" / "digits_cnn.safetensors"),
                },
                {"name": "carol", "host": "127.0.0.1", "port": free_port()},
            ],
            "model": {"architecture": "digits_cnn", "input_shape": [1, 8, 8]},
            "batch_size": 12,
            "randomness": "dealer",
            "dealer": {"host": "127.0.0.1", "port": free_port()},
            "transport": "tls",
            "tls": {"ca": str(work / "keys" / "ca.pem"), "certs": str(work / "keys")},
            "timeouts": {"connect_s": 60, "op_s": 30, "run_s": 120},
            "run_dir": str(work / "run"),
        }
        (work / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        started = time.perf_counter()
        try:
            report = run(load_config(work / "config.yaml"), echo=False)
            if report.agreement < 1.0:
                failures.append((i, f"agreement {report.agreement:.2%}"))
            party_peak.append(max(p["peak_rss_mib"] for p in report.parties.values()))
        except SmpcError as exc:
            failures.append((i, str(exc).splitlines()[0]))
        walls.append(time.perf_counter() - started)
        launcher_rss.append(rss_mib())
        print(f"run {i + 1}/{args.runs}: {walls[-1]:.2f} s", file=sys.stderr, flush=True)
    median = statistics.median(walls)
    slow = [i for i, w in enumerate(walls) if w > 3 * median]
    tenth = max(1, args.runs // 10)
    print(f"runs                  {args.runs} (3 parties, TLS, the dealer; 24 digits each)")
    print(f"failed                {len(failures)}" + "".join(f"\n  run {i + 1}: {m}" for i, m in failures))
    print(f"stalls (> 3x median)  {len(slow)}")
    print(f"wall s                median {median:.2f}, slowest {max(walls):.2f} (run {walls.index(max(walls)) + 1})")
    print(
        f"launcher RSS MiB      first {tenth}: {statistics.mean(launcher_rss[:tenth]):.0f}, "
        f"last {tenth}: {statistics.mean(launcher_rss[-tenth:]):.0f}"
    )
    if party_peak:
        print(
            f"party peak MiB        first {tenth}: {statistics.mean(party_peak[:tenth]):.0f}, "
            f"last {tenth}: {statistics.mean(party_peak[-tenth:]):.0f}"
        )
    return 1 if failures or slow else 0


if __name__ == "__main__":
    with results_page("soak"):
        code = main()
    sys.exit(code)
