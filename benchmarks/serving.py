"""Services (`smpc serve`) measured with `smpc query`, ratios from one run.

digits: the digits CNN service of configs/serve-2pc.yaml (alice, bob, the dealer; TLS
between the parties, mutual TLS for the client) on free ports with fresh keys: latency at
1 client (40 rows), throughput at 1, 4, 16 and 64 concurrent clients (one row per query),
bytes and rounds per query at 1 client (from the parties' /metrics), beside a cold `smpc
launch` of the same 360 rows (batch 64, the same parties, dealer and TLS).

text: the text service of configs/serve-text.yaml (the text demo's BERT classifier,
trained, packed for every shape up to 16 rows x 16 tokens with its tokenizer, and
signed, as `make serve-text` does) queried with the held-out sentences (`--text`).

minilm: a MiniLM-size encoder (6 layers, hidden 384, 12 heads, intermediate 1536,
vocabulary 30522, random weights scaled as real checkpoints: benchmarks/bert_encoder.py's
model) packed for 1 row x 16 tokens (a batch of one sentence: its dealer material is
hundreds of MB), calibrated on 8 sample sentences, queried with 16 others of 16 random
ids each (`--data`).

For text and minilm, with `comparisons: circuits` and `fss`: p50/p90/p99 latency at 1
client, throughput at 1, 4 and 16 clients, bytes and rounds per query per party.
The machine is shared and noisy: compare the figures of one run.

    python benchmarks/serving.py [--services digits text minilm] [--comparisons circuits fss] [--keep DIR]
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from launch import run
from smpc.runs.processes import free_port
from smpc import keys
from smpc.serve.client import Client
from smpc.serve.query import query

from results_page import results_page

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


def _keys(work: Path) -> None:
    keys.create_ca(work / "keys")
    for name in ("alice", "bob", "dealer", "analyst"):
        keys.issue(work / "keys", name)


def _serve(path: Path) -> tuple[subprocess.Popen, Client]:
    service = subprocess.Popen([str(Path(sys.executable).parent / "smpc"), "serve", str(path), "--quiet"])
    client = Client(path, client="analyst")
    deadline = time.monotonic() + 1200
    while True:
        try:
            if all(client.get(p, "/v2/health/ready").status_code == 200 for p in ("alice", "bob")):
                return service, client
        except Exception:
            pass
        if time.monotonic() > deadline or service.poll() is not None:
            service.kill()
            raise SystemExit("the service did not start")
        time.sleep(0.5)


def _stop(service: subprocess.Popen, client: Client) -> None:
    client.close()
    service.send_signal(signal.SIGTERM)
    service.wait(timeout=120)


def _phases(text: str) -> dict[str, tuple[float, float]]:
    # smpc_batch_phase_seconds by phase: (sum, count)
    out: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        for part, index in (("_sum{", 0), ("_count{", 1)):
            if line.startswith("smpc_batch_phase_seconds" + part):
                phase = line.split('phase="')[1].split('"')[0]
                pair = list(out.get(phase, (0.0, 0.0)))
                pair[index] = float(line.split()[-1])
                out[phase] = (pair[0], pair[1])
    return out


def _per_query(client: Client, run) -> tuple[dict, float, float, dict[str, float]]:
    # bytes and rounds alice sent per query while `run` ran, and the mean seconds of each
    # phase of her batches (from her /metrics)
    before = client.get("alice", "/metrics").text
    report = run()
    after = client.get("alice", "/metrics").text
    n = report["samples"]
    was, now = _phases(before), _phases(after)
    phases = {k: (s - was.get(k, (0.0, 0.0))[0]) / max(1.0, c - was.get(k, (0.0, 0.0))[1]) for k, (s, c) in now.items()}
    return (
        report,
        (_metric(after, "smpc_bytes_sent_total") - _metric(before, "smpc_bytes_sent_total")) / n,
        (_metric(after, "smpc_rounds_total") - _metric(before, "smpc_rounds_total")) / n,
        phases,
    )


def _packed_config(work: Path, name: str, model_dir: Path, comparisons: str, max_batch: int) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "serve-text.yaml").read_text())
    for p in doc["parties"]:
        p["port"], p["api_port"] = free_port(), free_port()
    doc["parties"][1]["weights"] = doc["model"]["program"] = str(model_dir)
    doc["model"]["public_key"] = str(work / "keys" / "bob.pub")
    doc["dealer"]["port"] = free_port()
    doc["tls"] = {"ca": str(work / "keys" / "ca.pem"), "certs": str(work / "keys")}
    doc["protocol"] = {"comparisons": comparisons}
    doc["serving"]["max_batch"] = max_batch
    doc["serving"]["model_name"] = name
    doc["timeouts"]["op_s"] = 120
    doc["serving"]["query_timeout_s"] = 1200  # 16 clients queue behind one-sentence batches
    doc["run_dir"] = str(work / f"{name}-{comparisons}")
    path = work / f"{name}-{comparisons}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _text_model(work: Path) -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(ROOT / "models"))
    import text_demo

    text_demo.serve_model(work / "text", work / "keys" / "bob.key", rows=16)
    return work / "text" / "model", work / "text" / "heldout.txt", work / "text" / "heldout-labels.txt"


def _minilm_model(work: Path, queries: int) -> tuple[Path, Path]:

    from smpc import artifacts
    from smpc.model import model_dir
    from smpc.model import pack

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bert_encoder

    from smpc.model import owner

    model = bert_encoder.build_model()
    ids, mask = bert_encoder.inputs(16, 1)
    out = work / "minilm"
    pack.pack(model, (ids,), out, {"attention_mask": mask})
    # the owner calibrates on sample sentences of its own (not the queries), as `smpc
    # model calibrate` does: with fss, the calibrated ops' comparisons run on narrow keys
    ids, mask = bert_encoder.inputs(16, 8)
    samples = work / "minilm-samples.safetensors"
    artifacts.save_inputs(samples, {"input_ids": ids, "attention_mask": mask})
    owner.calibrate_directory(out, samples)
    model_dir.sign(out, work / "keys" / "bob.key")
    ids, mask = bert_encoder.inputs(16, queries)
    mask[:] = 1  # every query a full 16 tokens
    data = work / "minilm-queries.safetensors"
    artifacts.save_inputs(data, {"input_ids": ids, "attention_mask": mask})
    return out, data


def _packed_service(work: Path, name: str, model_dir: Path, comparisons: str, max_batch: int, queries: dict) -> dict:
    """One service of a packed model: {concurrency: report}, with bytes and rounds per query."""
    path = _packed_config(work, name, model_dir, comparisons, max_batch)
    service, client = _serve(path)
    results = {}
    try:
        warm = queries[1] | {"rows": 2}
        query(path, "analyst", **warm)
        results[1], results["bytes"], results["rounds"], results["phases"] = _per_query(
            client, lambda: query(path, "analyst", concurrency=1, **queries[1])
        )
        for c in (4, 16):
            results[c] = query(path, "analyst", concurrency=c, **queries[c])
    finally:
        _stop(service, client)
    return results


def _print_packed(name: str, by_mode: dict) -> None:
    print(
        f"\n{name}: {'mode':>9} {'clients':>7} {'rows':>5} {'accuracy':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'queries/s':>10}"
    )
    for mode, results in by_mode.items():
        for c in (1, 4, 16):
            r = results[c]
            lat, acc = r["latency_ms"], r["accuracy"]
            print(
                f"{'':>{len(name) + 1}} {mode:>9} {c:>7} {r['samples']:>5} {'-' if acc is None else f'{acc:.4f}':>9} "
                f"{lat['p50']:>8.1f} {lat['p90']:>8.1f} {lat['p99']:>8.1f} {r['throughput_qps']:>10.2f}"
            )
    for mode, results in by_mode.items():
        print(
            f"{name} {mode}: per query per party {results['bytes'] / 2**20:.2f} MiB sent, {results['rounds']:.0f} rounds, "
            f"{results[1]['bytes_per_query_per_party'] / 1024:.1f} KiB from the client; "
            f"throughput 16 clients / 1 client {results[16]['throughput_qps'] / results[1]['throughput_qps']:.2f}"
        )
        phases = ", ".join(f"{k} {v * 1000:.0f}" for k, v in results["phases"].items())
        print(f"{name} {mode}: ms per batch at 1 client (alice), by phase: {phases}")
    if len(by_mode) == 2:
        a, b = by_mode["circuits"], by_mode["fss"]
        print(
            f"{name}: ratio p50 fss / circuits {b[1]['latency_ms']['p50'] / a[1]['latency_ms']['p50']:.2f}, "
            f"rounds fss / circuits {b['rounds'] / a['rounds']:.2f}, bytes fss / circuits {b['bytes'] / a['bytes']:.2f}"
        )


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Services measured with smpc query.")
    parser.add_argument(
        "--services", nargs="+", default=["digits", "text", "minilm"], choices=["digits", "text", "minilm"]
    )
    parser.add_argument("--comparisons", nargs="+", default=["circuits", "fss"], choices=["circuits", "fss"])
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (keys, models, every process's log) and keep it")
    args = parser.parse_args()
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        _keys(work)
        # one results page per service (docs/results/serving-NAME.md), so that measuring one
        # service again leaves the others' pages as they were
        if "text" in args.services:
            with results_page("serving-text"):
                model_dir, text, labels = _text_model(work)
                queries = {
                    1: {"text": text, "labels": labels, "rows": 40},
                    4: {"text": text, "labels": labels},
                    16: {"text": text, "labels": labels},
                }
                _print_packed(
                    "text", {m: _packed_service(work, "text", model_dir, m, 16, queries) for m in args.comparisons}
                )
        if "minilm" in args.services:
            with results_page("serving-minilm"):
                model_dir, data = _minilm_model(work, 16)
                queries = {1: {"data": data, "rows": 6}, 4: {"data": data, "rows": 8}, 16: {"data": data, "rows": 16}}
                _print_packed(
                    "minilm", {m: _packed_service(work, "minilm", model_dir, m, 1, queries) for m in args.comparisons}
                )
        if "digits" in args.services:
            with results_page("serving-digits"):
                _digits(work)
    return 0


def _digits(work: Path) -> None:
    path = _config(work, serving=True)
    service, client = _serve(path)
    try:
        query(path, "analyst", DATA, rows=8)  # warm: connections, the first batch of each size
        before = client.get("alice", "/metrics").text
        results = {1: query(path, "analyst", DATA, rows=40, concurrency=1)}
        after = client.get("alice", "/metrics").text
        per_query_bytes = (_metric(after, "smpc_bytes_sent_total") - _metric(before, "smpc_bytes_sent_total")) / 40
        per_query_rounds = (_metric(after, "smpc_rounds_total") - _metric(before, "smpc_rounds_total")) / 40
        for c in (4, 16, 64):
            results[c] = query(path, "analyst", DATA, concurrency=c)
    finally:
        _stop(service, client)
    started = time.perf_counter()
    report = run(_config(work, serving=False), echo=False)
    cold_s = time.perf_counter() - started

    print(
        f"\ndigits: {'clients':>8} {'rows':>5} {'accuracy':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'queries/s':>10}"
    )
    for c, r in results.items():
        lat = r["latency_ms"]
        print(
            f"{'':>7} {c:>8} {r['samples']:>5} {r['accuracy']:>9.4f} {lat['p50']:>8.1f} {lat['p90']:>8.1f} {lat['p99']:>8.1f} {r['throughput_qps']:>10.2f}"
        )
    print(f"per query at 1 client (alice): {per_query_bytes / 2**20:.2f} MiB sent, {per_query_rounds:.0f} rounds")
    launch_qps, online_qps = report.samples / cold_s, report.samples / report.online_s
    print(
        f"cold smpc launch of {report.samples} rows (batch 64): {cold_s:.2f} s wall ({launch_qps:.2f} rows/s), "
        f"online {report.online_s:.2f} s ({online_qps:.2f} rows/s), accuracy {report.accuracy_mpc:.4f}"
    )
    print(
        f"ratio throughput 16 clients / 1 client:      {results[16]['throughput_qps'] / results[1]['throughput_qps']:.2f}"
    )
    print(f"ratio throughput 64 clients / cold launch:   {results[64]['throughput_qps'] / launch_qps:.2f}")
    print(f"ratio throughput 64 clients / launch online: {results[64]['throughput_qps'] / online_qps:.2f}")
    print(f"ratio one query's latency / cold launch:     {results[1]['latency_ms']['p50'] / 1000 / cold_s:.3f}")


if __name__ == "__main__":
    sys.exit(main())
