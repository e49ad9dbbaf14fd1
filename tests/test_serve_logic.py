"""The pure logic of serving, each part alone: the client's shares, the batch
proposals and the decision every party derives, the query book, the serving config."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from smpc.config import parse_config
from smpc.errors import ConfigError
from smpc.serve import batching, shares
from smpc.serve.batching import DIFFERENT, HELD, MISSING, Item, Proposal
from smpc.serve.queries import Query, QueryBook, QueryFailed, query_key
from smpc.serve.query import percentile

BITS = 16


# -- shares -------------------------------------------------------------------------
@pytest.mark.parametrize("parties", [2, 3, 5])
def test_shares_add_up_on_edge_values(parties):
    unit = 2.0**-BITS
    limit = 2.0 ** (shares.SAFE_BITS - BITS)
    x = torch.tensor([0.0, unit, -unit, 1.0, -1.0, limit - 1, -(limit - 1), 3.25, -1e-9], dtype=torch.float64)
    encoded = shares.encode(x, BITS)
    assert encoded.tolist()[:3] == [0, 1, -1]
    parts = shares.split(encoded, parties)
    assert len(parts) == parties and all(p.dtype == torch.int64 for p in parts)
    assert torch.equal(shares.reconstruct(parts), encoded)
    assert torch.allclose(shares.decode(shares.reconstruct(parts), BITS).double(), x, atol=unit)


def test_shares_wrap_around_the_ring():
    # a share near the ring's ends: the sum still wraps to the value (mod 2^64)
    top = torch.tensor([2**63 - 1, -(2**63)], dtype=torch.int64)
    total = shares.reconstruct([top, torch.tensor([5, -5], dtype=torch.int64)])
    assert total.tolist() == [-(2**63) + 4, 2**63 - 5]
    encoded = torch.tensor([7, -7], dtype=torch.int64)
    assert torch.equal(shares.reconstruct(shares.split(encoded, 2)), encoded)


def test_shares_are_fresh_and_hide_the_value():
    encoded = shares.encode(torch.zeros(4096), BITS)
    a, b = shares.split(encoded, 2), shares.split(encoded, 2)
    assert not torch.equal(a[1], b[1])  # fresh masks every time
    # each share alone looks uniform: about half the bits set, whatever the value
    bits = torch.stack([(a[0] >> k) & 1 for k in range(64)]).float().mean()
    assert 0.48 < float(bits) < 0.52


@pytest.mark.parametrize(
    "bad, message",
    [
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (2.0 ** (shares.SAFE_BITS - BITS), "expected below"),
    ],
)
def test_shares_refuse_values_the_ring_cannot_hold(bad, message):
    with pytest.raises(ValueError, match=message):
        shares.encode(torch.tensor([1.0, bad]), BITS)


# -- proposals and decisions -------------------------------------------------------------
def test_proposal_round_trip_and_bounds():
    items = (Item((1, -2), 3), Item((-(2**63), 2**63 - 1), 1, final=True, seq=12))
    vector = Proposal(batching.BATCH, items).encode(4)
    assert vector.shape == (2 + 4 * 4,)
    assert Proposal.decode(vector, 4) == Proposal(batching.BATCH, items)
    with pytest.raises(ValueError, match="at most 1"):
        Proposal(batching.BATCH, items).encode(1)
    bad = vector.clone()
    bad[1] = 9
    with pytest.raises(ValueError, match="malformed batch proposal"):
        Proposal.decode(bad, 4)
    bad = vector.clone()
    bad[0] = 7
    with pytest.raises(ValueError, match="malformed batch proposal"):
        Proposal.decode(bad, 4)
    bad = vector.clone()
    bad[5] = -1  # a negative sequence length
    with pytest.raises(ValueError, match="malformed batch proposal"):
        Proposal.decode(bad, 4)


def test_decision_is_the_same_from_everyone_s_answers():
    items = (Item((1, 1), 2), Item((2, 2), 1), Item((3, 3), 1), Item((4, 4), 1, final=True))
    proposal = Proposal(batching.BATCH, items)
    leader = batching.encode_answer(False, [HELD, HELD, HELD, HELD], 4)
    follower = batching.encode_answer(True, [HELD, DIFFERENT, MISSING, MISSING], 4)
    decision = batching.decide(proposal, [leader, follower])
    assert decision.run == (0,)
    assert decision.different == (1,)
    assert decision.deferred == (2,)
    assert decision.missing == (3,)  # a final attempt fails instead of waiting again
    assert decision.stop
    assert decision.rows(proposal) == 2
    quiet = batching.decide(Proposal(batching.IDLE), [batching.encode_answer(False, [], 4)] * 3)
    assert quiet.run == () and not quiet.stop


def test_bucket_is_the_smallest_shape_that_holds_the_batch():
    from smpc.model.buckets import Bucket, grid, sizes, smallest_holding

    assert sizes(12) == (1, 2, 4, 8, 12) and sizes(1) == (1,) and sizes(16, 8) == (8, 16) and sizes(5, 8) == (5,)
    rows = grid(12)
    assert [smallest_holding(rows, r).rows for r in (1, 2, 3, 4, 5, 8, 9, 12)] == [1, 2, 4, 4, 8, 8, 12, 12]
    assert smallest_holding(rows, 13) is None
    text = grid(4, 16)
    assert text == tuple(Bucket(r, s) for r in (1, 2, 4) for s in (8, 16))
    assert smallest_holding(text, 1, 5) == Bucket(1, 8) and smallest_holding(text, 3, 9) == Bucket(4, 16)
    assert smallest_holding(text, 1, 17) is None and smallest_holding(text, 5, 8) is None
    assert Bucket(4, 16).label == "4 rows x 16 tokens" and Bucket(4).folder == "buckets/r4"


# -- the query book ----------------------------------------------------------------------
def _query(loop, client="analyst", qid="q1", rows=1) -> Query:
    return Query(client, qid, {"x": torch.zeros(rows, 1, 8, 8, dtype=torch.long)}, loop, loop.create_future())


def _book(**kwargs) -> QueryBook:
    book = QueryBook(**kwargs)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(QueryFailed, match="the service is starting"):
            book.add(_query(loop, qid="too early"))
    finally:
        loop.close()
    book.reopen()  # every party has joined
    return book


def test_query_keys_bind_the_client():
    assert query_key("analyst", "q1") == query_key("analyst", "q1")
    assert query_key("analyst", "q1") != query_key("eve", "q1")
    assert query_key("a", "bq") != query_key("ab", "q")


def test_book_picks_in_arrival_order_up_to_the_batch():
    loop = asyncio.new_event_loop()
    try:
        book = _book()
        for i, rows in enumerate([3, 4, 2, 1]):
            book.add(_query(loop, qid=f"q{i}", rows=rows))
        with pytest.raises(QueryFailed, match="already in progress"):
            book.add(_query(loop, qid="q0"))
        picked = book.pick(max_rows=8, max_wait_s=0, idle_s=0)
        assert [q.query_id for q in picked] == ["q0", "q1", "q3"]  # q2 does not fit after q0, q1
        assert book.pick(max_rows=8, max_wait_s=0, idle_s=0)  # nothing taken yet
        assert _book().pick(8, 0, 0.05) == []  # idle: an empty proposal
    finally:
        loop.close()


def test_book_waits_for_a_batch_to_fill_then_for_late_arrivals():
    loop = asyncio.new_event_loop()
    try:
        book = _book()
        book.add(_query(loop, qid="first"))
        threading.Timer(0.05, lambda: book.add(_query(loop, qid="second"))).start()
        started = time.monotonic()
        picked = book.pick(max_rows=2, max_wait_s=5, idle_s=1)
        assert [q.query_id for q in picked] == ["first", "second"]
        assert time.monotonic() - started < 2  # returned when full, not after max_wait
        late = _query(loop, qid="late")
        threading.Timer(0.05, lambda: book.add(late)).start()
        held = book.wait_for([late.key], timeout_s=5)
        assert held == {late.key: late}
    finally:
        loop.close()


def test_book_answers_drains_and_goes_down():
    loop = asyncio.new_event_loop()
    try:
        book = _book()
        q = _query(loop)
        book.add(q)
        book.drain()
        with pytest.raises(QueryFailed, match="shutting down") as refused:
            book.add(_query(loop, qid="new"))
        assert refused.value.status == 503
        assert len(book) == 1  # the waiting query is still answered while draining
        assert book.fail_all(503, "service unavailable: connection to party bob lost", down=True) == 1
        loop.run_until_complete(asyncio.sleep(0))
        with pytest.raises(QueryFailed, match="party bob"):
            q.future.result()
        with pytest.raises(QueryFailed, match="party bob"):
            book.add(_query(loop, qid="after"))
        small = _book(capacity=1)
        waiting = _query(loop, qid="waiting")
        small.add(waiting)
        with pytest.raises(QueryFailed, match="overloaded: 1 queries are waiting"):
            small.add(_query(loop, qid="one too many"))
        small.withdraw(waiting)  # its client gave up
        assert len(small) == 0
        late = _query(loop, qid="late")
        assert small.give_up(late.key, "the query did not reach every party in time") is None
        with pytest.raises(QueryFailed, match="did not reach every party") as refused:
            small.add(late)  # arriving after the parties gave up on it
        assert refused.value.status == 503
    finally:
        loop.close()


def test_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 90) == 7.0


# -- the serving section of a config -----------------------------------------------------
def _doc(**serving):
    parties = [
        {"name": "alice", "host": "127.0.0.1", "port": 1000, "api_port": 2000},
        {
            "name": "bob",
            "host": "127.0.0.1",
            "port": 1001,
            "api_port": 2001,
            "roles": ["model_owner"],
            "weights": "w.safetensors",
        },
    ]
    return {
        "parties": parties,
        "model": {"architecture": "digits_cnn", "input_shape": [1, 8, 8]},
        "transport": "tls",
        "tls": {"ca": "ca.pem", "certs": "."},
        "serving": {"clients": ["analyst"], **serving},
    }


def test_serving_config_batch_sizes():
    config = parse_config(_doc(max_batch=12), "s.yaml")
    assert config.serving.batch_sizes == (1, 2, 4, 8, 12)
    assert parse_config(_doc(max_batch=1), "s.yaml").serving.batch_sizes == (1,)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["parties"][0].pop("api_port"), r"s.yaml: parties\[0\].api_port: required with serving"),
        (lambda d: d["parties"][1].update(api_port=1000), r"parties\[1\].api_port: 127.0.0.1:1000 is also a party's"),
        (lambda d: d["parties"][1].update(api_port=2000), "api address 127.0.0.1:2000 is used by more than one party"),
        (lambda d: d["parties"][0].update(roles=["output"]), r"parties\[0\].roles: output is not used with serving"),
        (lambda d: d.update(transport="gloo"), "transport: serving needs tls"),
        (lambda d: d["serving"].update(clients=[]), "serving.clients: expected a non-empty list"),
        (lambda d: d["serving"].update(clients=["Analyst"]), "serving.clients: expected lower-case client names"),
        (lambda d: d["serving"].update(clients=["a", "a"]), "serving.clients: clients are listed twice"),
        (lambda d: d["serving"].update(max_batch=0), r"serving.max_batch: expected a value >= 1, got 0"),
        (lambda d: d["serving"].update(on_peer_loss="retry"), "serving.on_peer_loss: expected 'exit' or 'rejoin'"),
        (lambda d: d["serving"].update(colour="blue"), "serving.colour: unknown key"),
        (lambda d: d["serving"].update(model_name="Digits!"), "serving.model_name: expected a lower-case name"),
        (lambda d: d.pop("serving"), r"parties\[0\].api_port: only used with a serving section"),
    ],
)
def test_serving_config_mistakes_are_refused_by_name(change, message):
    doc = _doc()
    change(doc)
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, "s.yaml")


def test_one_off_commands_refuse_a_service_config(tmp_path):
    import yaml

    from smpc.runs.runner import run
    from parties.one_off import run_party

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_doc()))
    with pytest.raises(ConfigError, match="this config describes a service: start it with `smpc serve`"):
        run(path)
    from smpc.config import load_config

    with pytest.raises(ConfigError, match="start it with `smpc serve`"):
        run_party(load_config(path), "alice")


def test_keys_add_issues_client_identities_from_the_same_ca(tmp_path, capsys):
    from cryptography import x509

    from launch.cli import main

    assert main(["keys", "init", str(tmp_path), "alice", "bob"]) == 0
    assert main(["keys", "add", str(tmp_path), "analyst"]) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "analyst.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert main(["keys", "add", str(tmp_path), "analyst"]) == 2
    assert main(["keys", "add", str(tmp_path), "../analyst"]) == 2
    err = capsys.readouterr().err
    assert "'analyst' has a certificate already" in err and "'../analyst': expected a lower-case name" in err
