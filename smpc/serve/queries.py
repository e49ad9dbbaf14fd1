"""The queries a serving party holds: put there by its client API (an asyncio thread),
taken by its computing loop (the main thread), answered through asyncio futures.

A query's key is a digest of (client, id): the same at every party for the same query,
and a client cannot name another client's query.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from smpc.errors import SmpcError


def query_key(client: str, query_id: str) -> tuple[int, int]:
    """Two int64 naming the query (client, id) in the parties' batch proposals."""
    digest = hashlib.sha256(f"{client}\x00{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True), int.from_bytes(digest[8:16], "little", signed=True)


class QueryFailed(SmpcError):
    """A query that gets no answer: an HTTP status and one line for the client.

    The client sees the status and the line; the party's audit log records both."""

    code = "query"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Query:
    """One client request at one party: its shares of the inputs and where the answer goes."""

    client: str
    query_id: str
    shares: dict[str, torch.Tensor]  # by input name: int64 ring elements, [rows, *input shape]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    seq: int = 0  # its sequence length (0: the model has none)
    arrived: float = field(default_factory=time.monotonic)
    proposed: float | None = None  # when the leader first proposed it (its wait in line does not count)
    key: tuple[int, int] = field(init=False)  # query_key(client, query_id), computed once

    def __post_init__(self) -> None:
        self.key = query_key(self.client, self.query_id)

    @property
    def rows(self) -> int:
        return int(next(iter(self.shares.values())).shape[0])

    def answer(self, value: Any) -> None:
        """Resolve the client's request (thread-safe; a client gone by now costs nothing)."""
        self.loop.call_soon_threadsafe(_settle, self.future, value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


class QueryBook:
    """Thread-safe store of the queries waiting to be batched, in arrival order, at most
    `capacity` of them (beyond, new queries get 503: the service is overloaded)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._queries: dict[tuple[int, int], Query] = {}
        self._taken: dict[tuple[int, int], Query] = {}  # in a batch, not answered yet
        # queries the parties gave up on: one arriving late here is refused at once
        self._given_up: dict[tuple[int, int], str] = {}
        self._cond = threading.Condition()
        self.draining = False  # no new queries: the service is stopping
        # why the service cannot answer: not joined yet, or a peer is gone
        self.unavailable: str | None = "the service is starting: the parties have not all joined yet"

    def add(self, query: Query) -> None:
        """Called by the client API; refuses while draining, when down, or a repeated id."""
        with self._cond:
            if self.unavailable is not None:
                raise QueryFailed(503, self.unavailable)
            if self.draining:
                raise QueryFailed(503, "the service is shutting down")
            if query.key in self._queries:
                raise QueryFailed(409, f"query id {query.query_id!r} is already in progress")
            if query.key in self._given_up:
                raise QueryFailed(503, self._given_up[query.key])
            if len(self._queries) >= self.capacity:
                raise QueryFailed(503, f"the service is overloaded: {self.capacity} queries are waiting")
            self._queries[query.key] = query
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queries)

    def pick(self, max_rows: int, max_wait_s: float, idle_s: float) -> list[Query]:
        """At the leader: wait up to `idle_s` for a first query, then up to `max_wait_s`
        for more, and return those that fit in `max_rows`, oldest first."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queries, timeout=idle_s):
                return []
            deadline = time.monotonic() + max_wait_s
            while sum(q.rows for q in self._queries.values()) < max_rows:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(timeout=left):
                    break
            picked, rows = [], 0
            for q in self._queries.values():  # dicts keep arrival order
                if rows + q.rows <= max_rows:
                    picked.append(q)
                    rows += q.rows
            return picked

    def wait_for(self, keys: list[tuple[int, int]], timeout_s: float) -> dict[tuple[int, int], Query]:
        """At a follower: the proposed queries it holds, waiting up to `timeout_s` for all."""
        with self._cond:
            self._cond.wait_for(lambda: all(k in self._queries for k in keys), timeout=timeout_s)
            return {k: self._queries[k] for k in keys if k in self._queries}

    def take(self, key: tuple[int, int]) -> Query | None:
        """The query under `key`, moved from waiting into a batch (None if it left); it
        stays in the book's care until `done`, so that `fail_all` answers it too."""
        with self._cond:
            query = self._queries.pop(key, None)
            if query is not None:
                self._taken[key] = query
            return query

    def done(self, key: tuple[int, int]) -> None:
        """The query under `key` has been answered (or failed) by its batch."""
        with self._cond:
            self._taken.pop(key, None)

    def give_up(self, key: tuple[int, int], message: str) -> Query | None:
        """Remove the query under `key` (if here) and refuse it should it arrive later."""
        with self._cond:
            self._given_up[key] = message
            while len(self._given_up) > self.capacity:  # remember the latest only
                del self._given_up[next(iter(self._given_up))]
            return self._queries.pop(key, None)

    def withdraw(self, query: Query) -> None:
        """Forget `query` if it is still waiting (its client has given up)."""
        with self._cond:
            if self._queries.get(query.key) is query:
                del self._queries[query.key]

    def fail_all(self, status: int, message: str, down: bool = False) -> int:
        """Answer every waiting query, and every query taken into a batch that never
        finished, with an error; with `down`, refuse new ones too."""
        with self._cond:
            if down:
                self.unavailable = message
            pending = list(self._queries.values()) + list(self._taken.values())
            self._queries.clear()
            self._taken.clear()
        for q in pending:
            q.answer(QueryFailed(status, message))
        return len(pending)

    def reopen(self) -> None:
        """Every party has joined (again): accept queries."""
        with self._cond:
            self.unavailable = None

    def drain(self) -> None:
        """Refuse new queries from now on; those waiting are still answered."""
        with self._cond:
            self.draining = True
            self._cond.notify_all()
