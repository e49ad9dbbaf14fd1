"""`smpc query CONFIG --client NAME --data FILE [--rows N] [--concurrency C] [--report FILE]`

Sends the rows of a data file to a running service, one row per query, from C clients
at once (each waits for its answer before sending its next row), and prints (and writes
as JSON) samples, accuracy when the file has labels, latency percentiles and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from smpc import artifacts
from smpc.errors import SmpcError
from smpc.serve.client import Client, ServiceError


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _run(config: Any, client: str, inputs: torch.Tensor, concurrency: int) -> tuple[list[torch.Tensor], list[float], float]:
    # C clients, each with its own connections (one to each party), taking the next row
    answers: list[torch.Tensor | None] = [None] * len(inputs)
    latencies: list[float] = []
    next_row = 0
    clients = [Client(config, client=client) for _ in range(concurrency)]

    async def worker(c: Client) -> None:
        nonlocal next_row
        while next_row < len(inputs):
            i = next_row
            next_row += 1
            started = time.perf_counter()
            answers[i] = await c.ainfer(inputs[i])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    return answers, latencies, time.perf_counter() - started


def query(config: str | Path, client: str, data: str | Path, rows: int | None = None, concurrency: int = 1) -> dict[str, Any]:
    """Query a running service with the rows of `data`; returns the report.

    Args:
        config: the service's config file.
        client: this client's identity (its certificate in `tls.certs`).
        data: a safetensors file with `inputs` (and `labels`).
        rows: only the first `rows` rows (all by default).
        concurrency: how many clients query at once.
    """
    c = Client(config, client=client)
    dataset = artifacts.load_data(Path(data), c.input_shape)
    inputs, labels = dataset.inputs, dataset.labels
    if rows is not None:
        inputs, labels = inputs[:rows], None if labels is None else labels[:rows]
    if concurrency < 1:
        raise SmpcError(f"--concurrency: expected at least 1, got {concurrency}")
    answers, latencies, wall = asyncio.run(_run(c.config, client, inputs, concurrency))
    outputs = torch.stack(answers)
    report: dict[str, Any] = {
        "samples": len(inputs),
        "concurrency": concurrency,
        "accuracy": None if labels is None else round(float((outputs.argmax(-1) == labels).double().mean()), 4),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 50), 2),
            "p90": round(1000 * percentile(latencies, 90), 2),
            "p99": round(1000 * percentile(latencies, 99), 2),
            "mean": round(1000 * sum(latencies) / len(latencies), 2),
        },
        "throughput_qps": round(len(inputs) / wall, 2),
        "wall_s": round(wall, 3),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smpc query", description="Query a running service with the rows of a data file.")
    parser.add_argument("config", help="the service's YAML config")
    parser.add_argument("--client", required=True, help="this client's identity (its certificate in tls.certs)")
    parser.add_argument("--data", required=True, help="safetensors file with inputs (and labels)")
    parser.add_argument("--rows", type=int, help="only the first N rows")
    parser.add_argument("--concurrency", type=int, default=1, help="clients querying at once (default 1)")
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    args = parser.parse_args(argv)
    try:
        report = query(args.config, args.client, args.data, args.rows, args.concurrency)
    except ServiceError as exc:  # the service could not answer: not the user's mistake
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SmpcError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        from smpc.runfiles import write_json

        write_json(Path(args.report), report)
    return 0
