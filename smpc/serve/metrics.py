"""A serving party's Prometheus metrics (text format on its `/metrics`).

Values are counts, sizes and times only: never a query's or an answer's content.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """One registry per party process (not the global one: tests run several)."""

    def __init__(self, party: str, max_batch: int) -> None:
        # no *_created series: they are timestamps, not measurements (prometheus_client leaves it unannotated)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.queries = Counter(
            "smpc_queries", "Queries answered, by client and outcome", ["client", "outcome"], registry=r
        )
        self.latency = Histogram(
            "smpc_query_latency_seconds",
            "Time from a query's arrival to its answer at this party",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        rows = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, max_batch})
        self.batch_rows = Histogram("smpc_batch_rows", "Rows in each secret batch", buckets=rows, registry=r)
        self.batch_queries = Histogram("smpc_batch_queries", "Queries in each secret batch", buckets=rows, registry=r)
        self.batches = Counter(
            "smpc_batches",
            "Secret batches run, by the program's shape bucket (rows, sequence length)",
            ["bucket_rows", "bucket_seq"],
            registry=r,
        )
        self.phase_seconds = Histogram(
            "smpc_batch_phase_seconds",
            "Seconds each phase of a batch took at this party: agreement (the parties agree on the batch), "
            "dealer_material (waiting for the dealer's batch), program (the model on shares), answer (the shares back)",
            ["phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes = Counter("smpc_bytes_sent", "Bytes this party sent computing batches", registry=r)
        self.rounds = Counter("smpc_rounds", "Communication rounds of this party computing batches", registry=r)
        self.query_bytes = Gauge("smpc_bytes_per_query", "Bytes sent per query in the last batch", registry=r)
        self.query_rounds = Gauge("smpc_rounds_per_query", "Rounds per query in the last batch", registry=r)
        self.deferred = Counter(
            "smpc_deferred", "Proposed queries put off to the next round: not every party held them yet", registry=r
        )
        self.pool = Gauge(
            "smpc_pool_batches",
            "Dealer batches ready, by shape bucket (party 0)",
            ["bucket_rows", "bucket_seq"],
            registry=r,
        )
        self.peers_up = Gauge("smpc_peers_up", "Other parties (and the dealer) connected", registry=r)
        self.ready = Gauge("smpc_ready", "1 when the service answers queries", registry=r)
        self.party = party

    def answered(self, client: str, outcome: str, seconds: float | None = None) -> None:
        self.queries.labels(client=client, outcome=outcome).inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def batch(
        self,
        bucket: int | tuple[int, int],
        rows: int,
        queries: int,
        bytes_sent: int,
        rounds: int,
        seconds: dict[str, float],
    ) -> None:
        """One batch run: its bucket (rows, or rows and sequence length), the rows and
        queries in it, what it cost, and the seconds of each phase."""
        bucket_rows, bucket_seq = bucket if isinstance(bucket, tuple) else (bucket, None)
        self.batches.labels(
            bucket_rows=str(bucket_rows), bucket_seq="" if bucket_seq is None else str(bucket_seq)
        ).inc()
        for phase, value in seconds.items():
            self.phase_seconds.labels(phase=phase).observe(value)
        self.batch_rows.observe(rows)
        self.batch_queries.observe(queries)
        self.bytes.inc(bytes_sent)
        self.rounds.inc(rounds)
        self.query_bytes.set(bytes_sent / max(1, queries))
        self.query_rounds.set(rounds / max(1, queries))

    def text(self) -> bytes:
        return generate_latest(self.registry)
