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

import argparse
import signal
import sys
import time
from typing import Any

import torch

from parties.party import Party
from smpc import compat, runfiles, session, transport
from smpc.config import Config, load_config
from smpc.errors import AgreementError, PartyError
from smpc.execute import run_program
from smpc.serve import api, batching
from smpc.serve.batching import DIFFERENT, HELD, MISSING, Item, Proposal
from smpc.serve.metrics import ServiceMetrics
from smpc.serve.queries import Query, QueryBook, QueryFailed

IDLE_S = 0.5  # the leader proposes at least this often: a quiet service still notices a lost peer
FOLLOWER_WAIT_S = 0.2  # how long a follower waits for a proposed query still on its way


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
        self.counters: dict[int, int] = {}  # batches run per size: names each batch's dealer streams
        self.server: api.ApiServer | None = None
        self.said_draining = False

    def start_api(self) -> None:
        party, config = self.party, self.config
        info = api.model_info(config, party.program)
        app = api.build_app(
            party.name, info, self.serving.clients, self.book, self.status, self.metrics, party.audit.record,
            query_timeout_s=self.serving.query_timeout_s,
        )
        me = party.me
        self.server = api.ApiServer(app, me.host, me.api_port, transport.server_context(*config.tls_files(party.name)), party.name)
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
            if party.dealer is not None:
                party.provider.bind(party.rank, party.dealer.seed, party.dealer.open_pool())
            party.share_model()
            self.counters = {}
            session.barrier()
            self.book.reopen()
            self.status.up()
            self.metrics.ready.set(1)
            self.metrics.peers_up.set(len(config.parties) - 1 + (config.dealer is not None))
            party.audit.record("serving", model=self.serving.model_name, joined_s=round(time.perf_counter() - started, 3))
            print(f"serving {self.serving.model_name!r}: ready in {time.perf_counter() - started:.1f} s", flush=True)
            while self._round():
                pass
            self.status.down("the service has stopped")
            self.metrics.ready.set(0)
        left = self.book.fail_all(503, "the service has stopped", down=True)
        print(f"stopped ({left} queries that never reached every party failed)", flush=True)

    def _round(self) -> bool:
        """One proposal and its batch; False once the parties agree to stop."""
        party, serving, book = self.party, self.serving, self.book
        capacity = serving.max_batch
        leader = party.rank == 0
        if leader:
            picked = book.pick(capacity, serving.max_wait_ms / 1000, IDLE_S)
            now = time.monotonic()
            for q in picked:
                q.proposed = q.proposed or now
            # deferred since its first proposal for longer than arrival_s: now or never
            items = tuple(Item(q.key, q.rows, final=now - q.proposed > serving.arrival_s) for q in picked)
            kind = batching.BATCH if items else (batching.STOP if book.draining and not len(book) else batching.IDLE)
            vector = Proposal(kind, items).encode(capacity)
        else:
            vector = torch.zeros(2 + 3 * capacity, dtype=torch.long)
        proposal = Proposal.decode(session.broadcast_int64(vector, 0), capacity)
        held = book.wait_for([item.key for item in proposal.items], 0 if leader else FOLLOWER_WAIT_S)
        states = [
            MISSING if item.key not in held else (HELD if held[item.key].rows == item.rows else DIFFERENT)
            for item in proposal.items
        ]
        answers = session.all_gather_int64(batching.encode_answer(book.draining, states, capacity))
        decision = batching.decide(proposal, answers)
        if decision.stop and not self.said_draining:  # some party was asked to stop: all drain
            self.drain()
            self.said_draining = True
            print("draining: no new queries; answering those waiting", flush=True)
        if proposal.kind == batching.STOP:
            return False
        self.metrics.deferred.inc(len(decision.deferred))
        for i in decision.different:
            self._fail(proposal.items[i], 400, "the parties received different queries under this id (rows differ)")
        for i in decision.missing:
            self._fail(proposal.items[i], 503, f"the query did not reach every party within serving.arrival_s = {serving.arrival_s:g} s")
        if decision.run:
            # held everywhere; a client that gave up here since (504) leaves a None
            items = [proposal.items[i] for i in decision.run]
            self._batch(items, [book.take(item.key) for item in items])
        pool = party.dealer.pool if party.dealer is not None else None
        if pool is not None:
            if pool.failed:
                raise PartyError(pool.failed)
            for size, count in pool.level().items():
                self.metrics.pool.labels(size=str(size)).set(count)
        return True

    def _fail(self, item: Item, status: int, message: str) -> None:
        query = self.book.give_up(item.key, message)
        if query is not None:
            query.answer(QueryFailed(status, message))

    def _batch(self, items: list[Item], queries: list[Query | None]) -> None:
        # the same items, in the same order, at every party (the proposal's); a query
        # withdrawn here meanwhile is computed on zeros, so the parties stay in step
        party = self.party
        rows = sum(item.rows for item in items)
        size = batching.bucket(rows, self.serving.batch_sizes)
        index = self.counters.get(size, 0)
        self.counters[size] = index + 1
        if party.provider is not None:
            party.provider.start_batch(size, index)
        if party.dealer is not None and party.dealer.pool is not None:
            party.dealer.pool.next_batch(size, index)
        program = party.programs[size]
        spec = program.inputs[0]
        row_shape = spec.share_shape[1:]
        pieces = [q.share if q is not None else torch.zeros(item.rows, *row_shape, dtype=torch.long) for item, q in zip(items, queries)]
        share = torch.cat(pieces + [torch.zeros(size - rows, *row_shape, dtype=torch.long)])
        before = session.communication_stats()
        outputs = run_program(program, party.params, {spec.name: compat.from_client_share(share)})
        shares = {name: compat.share_for_client(out) for (name, _), out in zip(program.outputs, outputs)}
        after = session.communication_stats()
        offset = 0
        for item, q in zip(items, queries):
            if q is not None:
                q.answer({name: s[offset : offset + item.rows].clone() for name, s in shares.items()})
            offset += item.rows
        self.metrics.batch(rows, len(items), after["bytes_sent"] - before["bytes_sent"], after["rounds"] - before["rounds"])


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """`smpc serve CONFIG --name NAME` for one party: exit 0 when drained, non-zero on failure."""
    parser = argparse.ArgumentParser(prog="smpc serve", description="Run one party of CONFIG as a service.")
    parser.add_argument("config")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    config = None
    try:
        config = load_config(args.config)
        config.rank_of(args.name)
        Service(config, args.name).run()
    except Exception as exc:
        known = config is not None and args.name in config.names
        return runfiles.fail(config if known else None, args.name, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
