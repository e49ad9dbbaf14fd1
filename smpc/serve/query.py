"""`smpc query CONFIG --client NAME (--data FILE | --text FILE [--labels FILE]) [--rows N]
[--concurrency C] [--report FILE]`

Sends the rows of a data file (a zoo model's `inputs`, or a packed program's inputs by
name, as `smpc launch` takes them) or the sentences of a text file (tokenized here with
the model's tokenizer) to a running service, one row per query, from C clients at once
(each waits for its answer before sending its next query), and prints (and writes as
JSON) samples, accuracy when there are labels, latency percentiles, throughput, the
bytes a query sends each party, and the protocol the service runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import torch

from smpc import artifacts
from smpc.model.program import InputSpec
from smpc.errors import SmpcError
from smpc.serve.client import Client
from smpc.serve.model_info import ModelInfo


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _run(
    config: Any,
    client: str,
    queries: list[Any],
    concurrency: int,
    text: bool,
) -> tuple[list[Any], list[float], float, int]:
    # C clients, each with its own connections (one to each party), taking the next query
    answers: list[Any] = [None] * len(queries)
    latencies: list[float] = []
    next_query = 0
    clients = [Client(config, client=client) for _ in range(concurrency)]

    async def worker(c: Client) -> None:
        nonlocal next_query
        while next_query < len(queries):
            i = next_query
            next_query += 1
            started = time.perf_counter()
            answers[i] = await (c.ainfer_text([queries[i]]) if text else c.ainfer(**queries[i]))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    return answers, latencies, time.perf_counter() - started, sum(c.sent_bytes for c in clients)


def _data_queries(c: Client, info: ModelInfo, path: Path) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """One query per row of a data file, as `smpc launch`'s data owners hold it: a zoo
    model's `inputs`, or a packed program's inputs by name. A row's masked positions past
    its last token are not sent (a shorter query runs in a smaller bucket; the same answer)."""
    if (
        c.input_shape is not None
        and len(info.inputs) == 1
        and info.inputs[0].kind == "float"
        and info.inputs[0].seq_dim is None
    ):
        dataset = artifacts.load_data(path, c.input_shape)
        return [{info.inputs[0].name: row} for row in dataset.inputs], dataset.labels
    specs = [InputSpec(i.name, (1, *i.shape), i.kind, i.depth) for i in info.inputs]
    rows = artifacts.load_inputs(path, specs)
    for spec in specs:
        spec.check(rows.inputs[spec.name], str(path))
    mask = next((i for i in info.inputs if i.kind == "binary" and i.seq_dim == 1), None) if info.masked else None
    queries = []
    for r in range(rows.rows):
        length = None
        if mask is not None:
            held = rows.inputs[mask.name][r].nonzero()
            length = int(held.max()) + 1 if len(held) else 1
        query = {}
        for wanted in info.inputs:
            value = rows.inputs[wanted.name][r : r + 1]
            query[wanted.name] = (
                value.narrow(wanted.seq_dim, 0, length) if length is not None and wanted.seq_dim is not None else value
            )
        queries.append(query)
    return queries, rows.labels


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SmpcError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SmpcError(f"{path}: cannot read the {what} file ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def query(
    config: str | Path,
    client: str,
    data: str | Path | None = None,
    rows: int | None = None,
    concurrency: int = 1,
    text: str | Path | None = None,
    labels: str | Path | None = None,
) -> dict[str, Any]:
    """Query a running service with the rows of `data` (or the sentences of `text`, one
    query each); returns the report.

    Args:
        config: the service's config file.
        client: this client's identity (its certificate in `tls.certs`).
        data: a safetensors file of the model's inputs (and `labels`), as a data owner's.
        rows: only the first `rows` rows (all by default).
        concurrency: how many clients query at once.
        text: a text file of sentences, one per line (a model with a tokenizer).
        labels: a text file of integer labels, one per line (with `text`).
    """
    if (data is None) == (text is None):
        raise SmpcError("expected one of --data (a data file) or --text (a file of sentences)")
    if labels is not None and text is None:
        raise SmpcError("--labels goes with --text (a data file holds its own labels)")
    if concurrency < 1:
        raise SmpcError(f"--concurrency: expected at least 1, got {concurrency}")
    c = Client(config, client=client)
    try:
        info = c.describe()
    finally:
        c.close()
    if text is not None:
        queries: list[Any] = _read_lines(Path(text), "text")
        if not queries:
            raise SmpcError(f"{text}: no sentences")
        if not info.tokenizer:
            raise SmpcError(f"model {info.name!r} has no tokenizer: query it with --data (token ids), not --text")
        expected = None
        if labels is not None:
            values = _read_lines(Path(labels), "labels")
            if len(values) != len(queries) or not all(v.lstrip("-").isdigit() for v in values):
                raise SmpcError(
                    f"{labels}: expected {len(queries)} integer labels, one per line (one per sentence of {text})"
                )
            expected = torch.tensor([int(v) for v in values])
    elif data is not None:
        queries, expected = _data_queries(c, info, Path(data))
    else:  # refused above: one of the two is given
        raise SmpcError("expected one of --data (a data file) or --text (a file of sentences)")
    if rows is not None:
        queries, expected = queries[:rows], None if expected is None else expected[:rows]
    answers, latencies, wall, sent = asyncio.run(_run(c.config, client, queries, concurrency, text is not None))
    first = [a if isinstance(a, torch.Tensor) else next(iter(a.values())) for a in answers]
    predicted = [f.reshape(-1, f.shape[-1])[0].argmax() if f.dim() >= 1 else f for f in first]
    report: dict[str, Any] = {
        "samples": len(queries),
        "concurrency": concurrency,
        "accuracy": None if expected is None else round(float((torch.stack(predicted) == expected).double().mean()), 4),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 50), 2),
            "p90": round(1000 * percentile(latencies, 90), 2),
            "p99": round(1000 * percentile(latencies, 99), 2),
            "mean": round(1000 * sum(latencies) / len(latencies), 2),
        },
        "throughput_qps": round(len(queries) / wall, 2),
        "wall_s": round(wall, 3),
        "bytes_per_query_per_party": round(sent / len(queries) / len(info.parties)),
        "service": {"model": info.name, **info.protocol},
    }
    return report
