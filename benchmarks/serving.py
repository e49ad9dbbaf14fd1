"""The service (`smpc serve`) measured with `smpc query`, beside a cold `smpc launch`.

Starts the digits CNN service of configs/serve-2pc.yaml (alice, bob, the dealer; TLS
between the parties, mutual TLS for the client) on free ports with fresh keys, then:
latency at 1 client (40 rows), throughput at 1, 4, 16 and 64 concurrent clients (one row
per query), bytes and rounds per query at 1 client (from the parties' /metrics), and a
cold `smpc launch` of the same 360 rows (batch 64, the same parties, dealer and TLS).
Ratios come from this one run: the machine is shared and noisy.

    python benchmarks/serving.py
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from launch import run
from launch.bench import free_port
from smpc import keys
from smpc.serve.client import Client
from smpc.serve.query import query

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "digits-test.safetensors"


def _config(work: Path, serving: bool) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "serve-2pc.yaml").read_text())
    for p in doc["parties"]:
        p["port"], p["api_port"] = free_port(), free_port()
        if "weights" in p:
            p["weights"] = str(ROOT / "models" / "digits_cnn.safetensors")
    doc["dealer"]["port"] = free_port()
    doc["tls"] = {"ca": str(work / "keys" / "ca.pem"), "certs": str(work / "keys")}
    doc["run_dir"] = str(work / ("serve" if serving else "launch"))
    if not serving:  # the same parties as a one-off run: alice brings the rows and gets the answers
        del doc["serving"]
        for p in doc["parties"]:
            del p["api_port"]
        doc["parties"][0].update(roles=["data_owner", "output"], data=str(DATA))
        doc["batch_size"] = 64
    path = work / ("serve.yaml" if serving else "launch.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keys.create_ca(work / "keys")
        for name in ("alice", "bob", "dealer", "analyst"):
            keys.issue(work / "keys", name)
        path = _config(work, serving=True)
        service = subprocess.Popen([str(Path(sys.executable).parent / "smpc"), "serve", str(path), "--quiet"])
        client = Client(path, client="analyst")
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if all(client.get(p, "/v2/health/ready").status_code == 200 for p in ("alice", "bob")):
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    print("the service did not start", file=sys.stderr)
                    return 1
                time.sleep(0.3)
            query(path, "analyst", DATA, rows=8)  # warm: connections, the first batch of each size
            before = client.get("alice", "/metrics").text
            results = {1: query(path, "analyst", DATA, rows=40, concurrency=1)}
            after = client.get("alice", "/metrics").text
            per_query_bytes = (_metric(after, "smpc_bytes_sent_total") - _metric(before, "smpc_bytes_sent_total")) / 40
            per_query_rounds = (_metric(after, "smpc_rounds_total") - _metric(before, "smpc_rounds_total")) / 40
            for c in (4, 16, 64):
                results[c] = query(path, "analyst", DATA, concurrency=c)
        finally:
            client.close()
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)
        started = time.perf_counter()
        report = run(_config(work, serving=False), echo=False)
        cold_s = time.perf_counter() - started

    print(f"{'clients':>8} {'rows':>5} {'accuracy':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'queries/s':>10}")
    for c, r in results.items():
        lat = r["latency_ms"]
        print(f"{c:>8} {r['samples']:>5} {r['accuracy']:>9.4f} {lat['p50']:>8.1f} {lat['p90']:>8.1f} {lat['p99']:>8.1f} {r['throughput_qps']:>10.2f}")
    print(f"per query at 1 client (alice): {per_query_bytes / 2**20:.2f} MiB sent, {per_query_rounds:.0f} rounds")
    launch_qps, online_qps = report.samples / cold_s, report.samples / report.online_s
    print(f"cold smpc launch of {report.samples} rows (batch 64): {cold_s:.2f} s wall ({launch_qps:.2f} rows/s), "
          f"online {report.online_s:.2f} s ({online_qps:.2f} rows/s), accuracy {report.accuracy_mpc:.4f}")
    print(f"ratio throughput 16 clients / 1 client:      {results[16]['throughput_qps'] / results[1]['throughput_qps']:.2f}")
    print(f"ratio throughput 64 clients / cold launch:   {results[64]['throughput_qps'] / launch_qps:.2f}")
    print(f"ratio throughput 64 clients / launch online: {results[64]['throughput_qps'] / online_qps:.2f}")
    print(f"ratio one query's latency / cold launch:     {results[1]['latency_ms']['p50'] / 1000 / cold_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
