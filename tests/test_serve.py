"""`smpc serve` end to end: real party processes, the dealer, real HTTPS with client
certificates, the SDK's shares, refusals, drain on SIGTERM, and a party killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from smpc import artifacts, transport
from smpc.config import load_config
from smpc.model.execute import run_program
from smpc.model import pack
from smpc.model.buckets import Bucket
from smpc.serve.client import Client, ServiceError
from tests.harness import DATA, processes_mentioning, write_serve_config

SMPC = str(Path(sys.executable).parent / "smpc")


def _start(config_path: Path) -> subprocess.Popen:
    log = open(config_path.parent / "serve.log", "wb")
    return subprocess.Popen([SMPC, "serve", str(config_path), "--quiet"], stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(client: Client, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, (Path(client.config.source).parent / "serve.log").read_text()
        try:
            if all(client.get(p, "/v2/health/ready").status_code == 200 for p in client.config.names):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the service did not become ready")


def _stop(process: subprocess.Popen, config_path: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid in processes_mentioning(str(config_path)):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    path = write_serve_config(tmp)
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process)
        yield path, process, client
    finally:
        client.close()
        _stop(process, path)


def _plaintext(config_path: Path, x: torch.Tensor) -> torch.Tensor:
    config = load_config(config_path)
    program = pack.build_program(config, config.model_owner.weights, Bucket(len(x)))
    with torch.no_grad():
        return run_program(program, program.secret, {program.inputs[0].name: x})[0]


def _api(config_path: Path, party: str, identity: str | None) -> tuple[httpx.Client, str]:
    config = load_config(config_path)
    me = config.parties[config.rank_of(party)]
    ca, cert, key = config.client_files(identity or "analyst")
    context = transport.client_context(ca, cert, key)
    return httpx.Client(verify=context, timeout=30), f"https://{me.host}:{me.api_port}"


def test_answers_are_the_plaintext_model_s(service):
    path, _, client = service
    data = artifacts.load_data(DATA, (1, 8, 8))
    x = data.inputs[:13]
    got = torch.cat([client.infer(x[:8]), client.infer(x[8:13])])
    one = client.infer(x[0])  # one row in, one row out
    want = _plaintext(path, x)
    assert got.shape == want.shape == (13, 10) and one.shape == (10,)
    assert float((got - want).abs().max()) < 0.05
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert float((one - want[0]).abs().max()) < 0.05


def test_an_idle_service_outlives_its_timeouts(service):
    path, process, client = service
    time.sleep(3 * load_config(path).timeouts.op_s + 1)  # the dealer is silent all along
    assert process.poll() is None
    assert client.infer(torch.zeros(1, 8, 8)).shape == (10,)


def test_concurrent_queries_share_batches(service):
    path, _, client = service
    data = artifacts.load_data(DATA, (1, 8, 8))

    async def many():
        c = Client(path, client="analyst")
        try:
            return await asyncio.gather(*(c.ainfer(data.inputs[i]) for i in range(24)))
        finally:
            await c.aclose()

    answers = torch.stack(asyncio.run(many()))
    assert torch.equal(answers.argmax(1), _plaintext(path, data.inputs[:24]).argmax(1))
    metrics = client.get("alice", "/metrics").text
    batches = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("smpc_batch_queries_count"))
    )
    queries = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("smpc_batch_queries_sum"))
    )
    assert queries >= 24 + 3 and batches < queries  # several queries per secret batch
    assert 'smpc_queries_total{client="analyst",outcome="ok"}' in metrics
    assert "smpc_pool_batches" in metrics and "smpc_peers_up 2.0" in metrics


@pytest.mark.parametrize("certificate", ["none", "foreign"])
def test_a_connection_without_a_valid_client_certificate_gets_no_service(service, tmp_path, certificate):
    path, _, _ = service
    config = load_config(path)
    context = ssl.create_default_context(cafile=str(config.tls.ca))
    context.check_hostname = False
    if certificate == "foreign":  # the right name, from another CA
        from smpc import keys

        keys.create_ca(tmp_path / "other")
        keys.issue(tmp_path / "other", "analyst")
        context.load_cert_chain(tmp_path / "other" / "analyst.pem", tmp_path / "other" / "analyst.key")
    alice = config.parties[0]
    with socket.create_connection((alice.host, alice.api_port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="alice") as tls:
                tls.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: alice\r\n\r\n")
                answer = tls.recv(1000)
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert answer == b""  # refused in the handshake: not one byte of HTTP comes back


def _binary(parameters: dict, size: int, data: list | None = None, length: str | None = None) -> tuple[bytes, dict]:
    # one digits query (shape [1, 1, 8, 8]) in the OIP binary extension, as given
    tensor = {"name": "x", "shape": [1, 1, 8, 8], "datatype": "INT64", "parameters": parameters}
    if data is not None:
        tensor["data"] = data
    header = json.dumps({"id": f"binary-{size}-{parameters}", "inputs": [tensor]}).encode()
    return header + bytes(size), {"Inference-Header-Content-Length": length or str(len(header))}


@pytest.mark.parametrize(
    "identity, route, body, status, message",
    [
        ("eve", "/v2/models/digits/infer", {"id": "x", "inputs": []}, 403, "client 'eve' may not query model 'digits'"),
        ("analyst", "/v2/models/nope/infer", {}, 404, "unknown model 'nope'"),
        ("analyst", "/v2/models/digits/infer", b"{not json", 400, "the body is not JSON"),
        ("analyst", "/v2/models/digits/infer", {"inputs": []}, 400, "'id': expected a string"),
        (
            "analyst",
            "/v2/models/digits/infer",
            {"id": "a", "inputs": [{"name": "x", "shape": [1, 8, 8], "datatype": "INT64", "data": [0] * 64}]},
            400,
            r"inputs\[0\] \(x\)\.shape: expected \[rows, 1, 8, 8\], got \[1, 8, 8\]",
        ),
        (
            "analyst",
            "/v2/models/digits/infer",
            {"id": "b", "inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]},
            400,
            r"inputs\[0\] \(x\)\.datatype: expected 'INT64'",
        ),
        (
            "analyst",
            "/v2/models/digits/infer",
            {"id": "c", "inputs": [{"name": "x", "shape": [9, 1, 8, 8], "datatype": "INT64", "data": [0] * 576}]},
            413,
            r"expected 1..8 rows \(serving.max_batch\), got 9",
        ),
        (
            "analyst",
            "/v2/models/digits/infer",
            {"id": "d", "inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0.5] * 64}]},
            400,
            "expected 64-bit signed integers",
        ),
        ("analyst", "/v2/models/digits/infer", b"[" + b"1," * 200_000 + b"1]", 413, "exceeds the limit"),
        # the binary extension: a JSON header of the given length, then the inputs' bytes
        ("analyst", "/v2/models/digits/infer", _binary({"binary_data_size": 8}, 8), 400,
         r"inputs\[0\] \(x\)\.parameters\.binary_data_size: expected 512 bytes \(64 little-endian int64\) for shape \[1, 1, 8, 8\], got 8"),
        ("analyst", "/v2/models/digits/infer", _binary({"binary_data_size": 512}, 500), 400,
         "the body has 500 bytes after its JSON header; the inputs' binary_data_size add up to 512"),
        ("analyst", "/v2/models/digits/infer", _binary({"binary_data_size": -1}, 0), 400,
         r"inputs\[0\]\.parameters\.binary_data_size: expected a byte count, got -1"),
        ("analyst", "/v2/models/digits/infer", _binary({"binary_data_size": 512}, 512, data=[0] * 64), 400,
         r"inputs\[0\] \(x\): both data and parameters.binary_data_size; expected one"),
        ("analyst", "/v2/models/digits/infer", _binary({"binary_data_size": 512}, 512, length="ten"), 400,
         "Inference-Header-Content-Length: expected the JSON header's length in bytes, at most the body's"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_clear_error_and_the_service_goes_on(service, identity, route, body, status, message):
    path, _, client = service
    http, url = _api(path, "bob", identity)
    with http:
        if isinstance(body, tuple):  # (bytes, headers): the binary extension
            kwargs = {"content": body[0], "headers": body[1]}
        else:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = http.post(f"{url}{route}", extensions={"sni_hostname": "bob"}, **kwargs)
    assert r.status_code == status
    import re

    assert re.search(message, r.json()["error"]), r.json()
    assert client.infer(torch.zeros(1, 8, 8)).shape == (10,)  # everyone else is still served


def test_a_query_in_plain_json_gets_the_answer_the_binary_extension_gets(service):
    # the client sends the shares in the OIP's binary extension; a client of its own (curl,
    # another OIP library) may send them as JSON integers: the same query either way
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    path, _, client = service
    x = artifacts.load_data(DATA, (1, 8, 8)).inputs[:3]
    bodies, headers, single, seq = client._bodies(client._named(x, {}))
    assert headers["content-type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    as_json = []
    for body in bodies:
        doc = json.loads(body[:length])
        (tensor,) = doc["inputs"]
        assert tensor["parameters"]["binary_data_size"] == len(body) - length == 8 * 3 * 64
        del tensor["parameters"]
        tensor["data"] = np.frombuffer(body[length:], dtype="<i8").tolist()
        as_json.append(json.dumps(doc).encode())
    assert len(as_json[0]) > 2 * len(bodies[0])  # JSON text: more than twice the bytes

    def post(party: str, body: bytes) -> httpx.Response:
        http, url = _api(path, party, "analyst")
        with http:
            return http.post(
                f"{url}/v2/models/digits/infer",
                content=body,
                headers={"content-type": "application/json"},
                extensions={"sni_hostname": party},
            )

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(post, ["alice", "bob"], as_json))
    got = client._answer(responses, single, seq)
    want = _plaintext(path, x)
    assert float((got - want).abs().max()) < 0.05 and float((client.infer(x) - want).abs().max()) < 0.05


def test_metadata_and_health_follow_the_open_inference_protocol(service):
    _, _, client = service
    assert client.get("alice", "/v2/health/live").json() == {"live": True}
    meta = client.get("bob", "/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "INT64", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]
    assert meta["parameters"]["precision_bits"] == 16 and meta["parameters"]["parties"] == ["alice", "bob"]
    assert client.get("bob", "/v2/models/digits/ready").status_code == 200


def test_the_audit_log_names_each_query_but_holds_no_values(service):
    path, _, _ = service
    config = load_config(path)
    for party in ("alice", "bob"):
        events = [json.loads(line) for line in (config.run_dir / f"{party}.audit.jsonl").read_text().splitlines()]
        queries = [e for e in events if e["event"] == "query"]
        assert queries and all(e["client"] == "analyst" and e["model"] == "digits" and e["rows"] >= 1 for e in queries)
        if party == "bob":  # where the bad requests went
            assert any(e["event"] == "refused" and e["client"] == "eve" for e in events)
        assert all("data" not in e and "inputs" not in e for e in events)


def test_sigterm_drains_and_every_process_exits(service):
    # last in this module: it stops the shared service
    path, process, client = service
    pending = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, torch; from smpc.serve.client import Client; "
                f"c = Client({str(path)!r}, client='analyst'); print(c.infer(torch.zeros(2, 1, 8, 8)).shape)"
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(4.0)  # the query is on its way or answered
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - started < 30
    assert pending.wait(timeout=30) == 0, pending.stdout.read()
    assert processes_mentioning(str(path)) == []
    with pytest.raises(ServiceError, match="party alice at .* is unreachable"):
        client.infer(torch.zeros(1, 8, 8))


def test_killing_a_party_fails_the_next_query_by_name(tmp_path):
    path = write_serve_config(tmp_path)
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process)
        assert client.infer(torch.zeros(1, 8, 8)).shape == (10,)
        (bob,) = [
            pid
            for pid in processes_mentioning(str(path))
            if b"--name\x00bob" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(bob, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ServiceError, match="bob"):
            client.infer(torch.zeros(1, 8, 8))
        assert time.monotonic() - started < 40
        assert process.wait(timeout=40) == 2  # the supervisor stops the rest and says why
        log = (tmp_path / "serve.log").read_text()
        assert "party bob failed (signal SIGKILL)" in log
        assert processes_mentioning(str(path)) == []
    finally:
        client.close()
        _stop(process, path)


def test_with_rejoin_a_killed_party_is_restarted_and_the_service_comes_back(tmp_path):
    path = write_serve_config(tmp_path, on_peer_loss="rejoin")
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process)
        before = client.infer(torch.ones(1, 8, 8))
        (bob,) = [
            pid
            for pid in processes_mentioning(str(path))
            if b"--name\x00bob" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(bob, signal.SIGKILL)
        try:  # answered by the restarted bob, or refused naming the outage
            client.infer(torch.ones(1, 8, 8))
        except ServiceError as exc:
            assert "bob" in str(exc) or "unavailable" in str(exc)
        _wait_ready(client, process)
        after = client.infer(torch.ones(1, 8, 8))
        assert float((after - before).abs().max()) < 0.05  # the model was shared again, the same
        log = (tmp_path / "serve.log").read_text() + (tmp_path / "run" / "alice.log").read_text()
        assert "starting it again" in log and "waiting for every party to join again" in log
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert processes_mentioning(str(path)) == []
    finally:
        client.close()
        _stop(process, path)
