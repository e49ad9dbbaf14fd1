"""A service runs every protocol setting a one-off run does, along the same compute path:
FSS comparisons, the dealer's truncation and range checks, with real party processes,
the dealer and real HTTPS clients; a query out of range fails alone (422) and the
service goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from smpc import artifacts
from smpc.config import load_config
from smpc.serve.client import Client, ServiceError
from tests.harness import DATA, write_serve_config
from tests.served_models import gelu_mlp
from tests.test_serve import _plaintext, _start, _stop, _wait_ready


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def _edit(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_a_service_with_fss_comparisons_and_range_checks_answers_as_plaintext(tmp_path):
    path = write_serve_config(tmp_path, max_batch=4, pool=1)
    doc = load_config(path)
    assert doc.plan.truncation == "dealer"  # unset: the dealer's, serving included
    _edit(path, lambda d: d.update(protocol={"comparisons": "fss", "range_checks": True}))
    config = load_config(path)
    assert (config.protocol.comparisons, config.plan.truncation, config.protocol.range_checks) == (
        "fss",
        "dealer",
        True,
    )
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process, timeout_s=240)
        data = artifacts.load_data(DATA, (1, 8, 8))
        x = data.inputs[:6]

        async def together():
            c = Client(path, client="analyst")
            try:
                return await asyncio.gather(c.ainfer(x[:3]), c.ainfer(x[3:6]))
            finally:
                await c.aclose()

        got = torch.cat(asyncio.run(together()))
        want = _plaintext(path, x)
        assert float((got - want).abs().max()) < 0.05 and torch.equal(got.argmax(1), want.argmax(1))
        meta = client.get("alice", "/v2/models/digits").json()
        assert meta["parameters"]["protocol"] == {"comparisons": "fss", "truncation": "dealer", "range_checks": True}
        metrics = client.get("bob", "/metrics").text
        assert _metric_lines(metrics, 'smpc_batches_total{bucket_rows="4",bucket_seq=""}')
        for phase in ("agreement", "dealer_material", "program", "answer"):
            assert _metric_lines(metrics, f'smpc_batch_phase_seconds_count{{phase="{phase}"}}'), phase
        log = (tmp_path / "run" / "alice.log").read_text()
        assert "comparisons: fss, truncation: dealer, range checks" in log
    finally:
        client.close()
        _stop(process, path)


def test_a_query_out_of_range_fails_alone_and_the_service_goes_on(tmp_path):
    weights = tmp_path / "gelu_mlp.safetensors"
    save_file({k: v.contiguous() for k, v in gelu_mlp().state_dict().items()}, str(weights))
    path = write_serve_config(tmp_path, max_batch=4, pool=1, max_wait_ms=300)

    def change(d):
        d["model"] = {"architecture": "tests.served_models:gelu_mlp", "input_shape": [4]}
        d["parties"][1]["weights"] = str(weights)
        d["protocol"] = {"range_checks": True}

    _edit(path, change)
    config = load_config(path)
    assert config.model.input_shape == (4,) and config.protocol.range_checks
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process, timeout_s=240)
        good = torch.tensor([[0.5, -1.0, 2.0, 0.25], [3.0, 1.0, -2.0, 0.0]])
        far = torch.full((1, 4), 4.0e6)  # inside what a client may encode; GELU's input leaves its range

        async def together():
            c = Client(path, client="analyst")
            try:
                return await asyncio.gather(
                    c.ainfer(good[:1]), c.ainfer(far), c.ainfer(good[1:]), return_exceptions=True
                )
            finally:
                await c.aclose()

        first, bad, second = asyncio.run(together())
        assert isinstance(bad, ServiceError), bad
        assert "422 range check failed" in str(bad) and "(gelu)" in str(bad)
        want = gelu_mlp().eval()(good).detach()
        assert float((torch.cat([first, second]) - want).abs().max()) < 0.01
        after = client.infer(good)  # the next in-range query is answered
        assert float((after - want).abs().max()) < 0.01
        with pytest.raises(ServiceError, match=r"party alice: 422 range check failed: .*\(gelu\): magnitude out of"):
            client.infer(far)
        for party in ("alice", "bob"):
            events = [json.loads(line) for line in (config.run_dir / f"{party}.audit.jsonl").read_text().splitlines()]
            failed = [e for e in events if e["event"] == "range_check_failed"]
            assert len(failed) == 2 and all(e["client"] == "analyst" and "(gelu)" in e["message"] for e in failed)
    finally:
        client.close()
        _stop(process, path)
