"""A standing party (`smpc serve CONFIG --name NAME`): the model is shared once, then
the parties answer clients' queries in secret batches until they are told to stop.

The phases are `parties.party.Party`'s; what is particular to a service is here: the
client API (smpc.serve.api) in a background thread, and the computing loop, where
every round the leader (rank 0) proposes a batch, every party checks it holds the same
queries (smpc.serve.batching), and the batch is computed on the clients' own shares.
Each party returns its share of each output to the client who asked; none of them
ever holds a query or an answer in the clear.

SIGTERM (or Ctrl-C) drains: no new queries, those waiting are answered, then every
party leaves. A party or the dealer that is gone ends the session at every other
party within the op timeout; its waiting queries fail with 503 naming the cause, and
the party exits non-zero or joins again (serving.on_peer_loss).
"""

from __future__ import annotations

import signal
import time
from typing import Any
from collections.abc import Iterator

import torch

from parties.party import Batch, Computed, Party
from smpc import fixed_point, session, transport
from smpc.config import Config
from smpc.errors import AgreementError, PartyError, RangeCheckError
from smpc.model import pack
from smpc.model.buckets import Bucket, smallest_holding
from smpc.serve import api, batching, model_info
from smpc.serve.batching import DIFFERENT, HELD, MISSING, Item, Proposal
from smpc.serve.metrics import ServiceMetrics
from smpc.serve.queries import Query, QueryBook, QueryFailed

IDLE_S = 0.5  # the leader proposes at least this often: a quiet service still notices a lost peer
FOLLOWER_WAIT_S = 0.2  # how long a follower waits for a proposed query still on its way
STOP = object()  # a round's outcome: the parties agree to stop


class Service:
    """One party's service: its Party, its client API and the queries it holds."""

    def __init__(self, config: Config, name: str) -> None:
        if config.serving is None:
            raise PartyError(f"{config.source}: no serving section: use `smpc launch` or `smpc party` for one-off runs")
        self.config, self.serving = config, config.serving
        self.party = Party(config, name)
        self.book = QueryBook(capacity=max(256, 8 * self.serving.max_batch))
        self.status = api.Status()
        self.metrics = ServiceMetrics(name, self.serving.max_batch)
        self.counters: dict[Bucket, int] = {}  # batches run per shape bucket: names each batch's dealer streams
        self.retry: list[Batch] = []  # queries of a batch a range check refused, to run alone
        self.server: api.ApiServer | None = None
        self.said_draining = False
        # a packed program's shapes: which dimension of each input and output is the sequence
        self.layout = pack.layout(config.model.program) if config.model.program is not None else None

    def start_api(self) -> None:
        party, config = self.party, self.config
        info = model_info.describe(config, party.programs, self.layout)
        tokenizer = (config.model.program / self.layout.tokenizer).read_bytes() if info.tokenizer else None
        app = api.build_app(
            party.name,
            info,
            self.serving.clients,
            self.book,
            self.status,
            self.metrics,
            party.audit.record,
            query_timeout_s=self.serving.query_timeout_s,
            tokenizer=tokenizer,
        )
        me = party.me
        self.server = api.ApiServer(
            app, me.host, me.api_port, transport.server_context(*config.tls_files(party.name)), party.name
        )
        self.server.start()
        print(f"client API on https://{me.host}:{me.api_port}/v2/models/{info.name} (mutual TLS)", flush=True)

    def drain(self, *_: Any) -> None:
        """Signal handler: answer what is waiting, accept nothing new, then leave (it
        only sets a flag: printing from a handler could interrupt a print)."""
        self.book.drain()

    def run(self) -> None:
        """Serve until drained; raises PartyError when the session is lost and the
        config says to exit."""
        party = self.party
        party.prepare()
        self.start_api()
        signal.signal(signal.SIGTERM, self.drain)
        signal.signal(signal.SIGINT, self.drain)
        try:
            while True:
                try:
                    self._session()
                    return
                except AgreementError:
                    raise  # joining again cannot mend different settings
                except Exception as exc:  # a party or the dealer is gone, or the session broke
                    reason = f"service unavailable: {_cause(exc)}"
                    self.status.down(reason)
                    self.metrics.ready.set(0)
                    self.metrics.peers_up.set(0)
                    failed = self.book.fail_all(503, reason, down=True)
                    party.audit.record("outage", message=reason, failed_queries=failed)
                    print(f"{reason} ({failed} waiting queries failed)", flush=True)
                    if self.serving.on_peer_loss == "exit" or self.book.draining:
                        raise PartyError(reason) from None
                    print("waiting for every party to join again", flush=True)
                    time.sleep(1.0)
        finally:
            if self.server is not None:
                self.server.stop()

    def _session(self) -> None:
        party, config = self.party, self.config
        started = time.perf_counter()
        with party.join():
            party.agree()
            party.open_material()
            party.share_model()
            self.counters = {}
            self.retry = []
            pool = party.dealer.pool if party.dealer is not None else None
            # the dealer's offline phase: a batch of every shape before the first query
            waited = party.await_material(lambda wait_s: pool is None or pool.holds_every(party.buckets, wait_s))
            if pool is not None:
                print(f"offline phase (the dealer's first batch of every shape): {waited:.2f} s", flush=True)
            self.book.reopen()
            self.status.up()
            self.metrics.ready.set(1)
            self.metrics.peers_up.set(len(config.parties) - 1 + (config.dealer is not None))
            party.audit.record(
                "serving", model=self.serving.model_name, joined_s=round(time.perf_counter() - started, 3)
            )
            print(
                f"serving {self.serving.model_name!r} ({self._protocol()}): ready in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
            party.run(self)
            self.status.down("the service has stopped")
            self.metrics.ready.set(0)
        left = self.book.fail_all(503, "the service has stopped", down=True)
        print(f"stopped ({left} queries that never reached every party failed)", flush=True)

    def _protocol(self) -> str:
        config = self.config
        checks = ", range checks" if config.protocol.range_checks else ""
        return f"comparisons: {config.protocol.comparisons}, truncation: {config.plan.truncation}{checks}"

    # -- the workload: batches from the clients' queries, shares back to them ------------
    def batches(self) -> Iterator[Batch]:
        """Rounds of proposals until the parties agree to stop; each round that runs
        queries yields their batch. Queries of a batch a range check refused are retried
        one by one first (`refused`), in the same order at every party."""
        while True:
            while self.retry:
                yield self.retry.pop(0)
            batch = self._round()
            if batch is STOP:
                return
            if batch is not None:
                yield batch

    def deliver(self, batch: Batch, computed: Computed) -> None:
        program = self.party.programs[batch.bucket]
        items, queries, agreed_s = batch.context
        started = time.perf_counter()
        shares = {name: fixed_point.share_for_client(out) for (name, _), out in zip(program.outputs, computed.outputs)}
        offset = 0
        for item, q in zip(items, queries):
            self.book.done(item.key)
            if q is not None:  # its rows, and with a sequence its own length
                answer = {}
                for name, s in shares.items():
                    mine, seq_dim = s[offset : offset + item.rows], self._seq_dim(name)
                    answer[name] = (mine if seq_dim is None else mine.narrow(seq_dim, 0, item.seq)).clone()
                q.answer(answer)
            offset += item.rows
        seconds = {"agreement": agreed_s, **computed.seconds, "answer": time.perf_counter() - started}
        bucket = batch.bucket
        self.metrics.batch(
            (bucket.rows, bucket.seq or None),
            sum(i.rows for i in items),
            len(items),
            computed.bytes_sent,
            computed.rounds,
            seconds,
        )

    def refused(self, batch: Batch, error: RangeCheckError) -> None:
        """A range check failed (every party learnt the same bit): alone, the query fails
        with 422 naming the op; in company, each query of the batch is tried alone, so
        that one query out of range cannot fail the others."""
        items, queries, _ = batch.context
        if len(items) > 1:
            self.retry.extend(self._make_batch([item], [q]) for item, q in zip(items, queries))
            return
        query = queries[0]
        self.book.done(items[0].key)
        self.party.audit.record(
            "range_check_failed",
            message=str(error),
            client=None if query is None else query.client,
            id=None if query is None else query.query_id,
        )
        print(f"a query failed its range check: {error}", flush=True)
        if query is not None:
            query.answer(QueryFailed(422, str(error)))

    def _round(self) -> Batch | None | object:
        """One proposal: the batch to run, None when there is none, STOP once the parties
        agree to stop."""
        party, serving, book = self.party, self.serving, self.book
        capacity = serving.max_batch
        leader = party.rank == 0
        if leader:
            picked = book.pick(capacity, serving.max_wait_ms / 1000, IDLE_S)
            now = time.monotonic()
            for q in picked:
                q.proposed = q.proposed or now
            # deferred since its first proposal for longer than arrival_s: now or never
            items = tuple(Item(q.key, q.rows, final=now - q.proposed > serving.arrival_s, seq=q.seq) for q in picked)
            kind = batching.BATCH if items else (batching.STOP if book.draining and not len(book) else batching.IDLE)
            vector = Proposal(kind, items).encode(capacity)
        else:
            vector = torch.zeros(batching.proposal_size(capacity), dtype=torch.long)
        began = time.perf_counter()  # the agreement, not the wait for queries
        proposal = Proposal.decode(session.broadcast_int64(vector, 0), capacity)
        if not leader:
            began = time.perf_counter()
        held = book.wait_for([item.key for item in proposal.items], 0 if leader else FOLLOWER_WAIT_S)
        states = [
            MISSING
            if item.key not in held
            else (HELD if (held[item.key].rows, held[item.key].seq) == (item.rows, item.seq) else DIFFERENT)
            for item in proposal.items
        ]
        answers = session.all_gather_int64(batching.encode_answer(book.draining, states, capacity))
        decision = batching.decide(proposal, answers)
        if decision.stop and not self.said_draining:  # some party was asked to stop: all drain
            self.drain()
            self.said_draining = True
            print("draining: no new queries; answering those waiting", flush=True)
        if proposal.kind == batching.STOP:
            return STOP
        self.metrics.deferred.inc(len(decision.deferred))
        for i in decision.different:
            self._fail(
                proposal.items[i], 400, "the parties received different queries under this id (rows or tokens differ)"
            )
        for i in decision.missing:
            self._fail(
                proposal.items[i],
                503,
                f"the query did not reach every party within serving.arrival_s = {serving.arrival_s:g} s",
            )
        pool = party.dealer.pool if party.dealer is not None else None
        if pool is not None:
            if pool.failed:
                raise PartyError(pool.failed)
            if pool.requester:
                for bucket, count in pool.level().items():
                    self.metrics.pool.labels(bucket_rows=str(bucket.rows), bucket_seq=str(bucket.seq or "")).set(count)
        if not decision.run:
            return None
        # held everywhere; a client that gave up here since (504) leaves a None
        items = [proposal.items[i] for i in decision.run]
        return self._make_batch(items, [book.take(item.key) for item in items], time.perf_counter() - began)

    def _fail(self, item: Item, status: int, message: str) -> None:
        query = self.book.give_up(item.key, message)
        if query is not None:
            query.answer(QueryFailed(status, message))

    def _make_batch(self, items: list[Item], queries: list[Query | None], agreed_s: float = 0.0) -> Batch:
        # the same items, in the same order, at every party (the proposal's); a query
        # withdrawn here meanwhile is computed on zeros, so the parties stay in step
        # (rows of zeros; with a sequence, the positions past a query's length are zeros
        # too: masked, they change no answer)
        party = self.party
        rows = sum(item.rows for item in items)
        bucket = smallest_holding(party.buckets, rows, max(item.seq for item in items))
        index = self.counters.get(bucket, 0)
        self.counters[bucket] = index + 1
        inputs = {}
        for spec in party.programs[bucket].inputs:
            share = torch.zeros(bucket.rows, *spec.share_shape[1:], dtype=torch.long)
            seq_dim = self._seq_dim(spec.name)
            offset = 0
            for item, q in zip(items, queries):
                if q is not None:
                    piece = q.shares[spec.name]
                    target = share[offset : offset + item.rows]
                    if seq_dim is not None:
                        target = target.narrow(seq_dim, 0, piece.shape[seq_dim])
                    target.copy_(piece)
                offset += item.rows
            inputs[spec.name] = fixed_point.from_client_share(share)
        return Batch(bucket, index, inputs, context=(items, queries, agreed_s))

    def _seq_dim(self, name: str) -> int | None:
        return self.layout.seq_dims.get(name) if self.layout is not None else None


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
