"""The text service of `make serve-text`, end to end on free ports: the model made as the
Makefile makes it (models/text_demo.py --serve: trained, packed for every shape with its
tokenizer, signed), `configs/serve-text.yaml` as shipped (only ports and paths moved),
`smpc serve`, and `smpc query --text --labels --report` at one client and at 16."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from smpc.runs.processes import free_port
from smpc import keys
from smpc.serve.client import Client
from tests.harness import ROOT
from tests.test_serve import _start, _stop, _wait_ready

SMPC = str(Path(sys.executable).parent / "smpc")


@pytest.fixture(scope="module")
def text_service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-text")
    keys.create_ca(tmp / "keys")
    for name in ("alice", "bob", "dealer", "analyst"):
        keys.issue(tmp / "keys", name)
    made = subprocess.run(
        [
            sys.executable,
            str(ROOT / "models" / "text_demo.py"),
            "--serve",
            str(tmp / "model-dir"),
            "--sign-key",
            str(tmp / "keys" / "bob.key"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    doc = yaml.safe_load((ROOT / "configs" / "serve-text.yaml").read_text())
    for party in doc["parties"]:
        party["port"], party["api_port"] = free_port(), free_port()
    doc["parties"][1]["weights"] = doc["model"]["program"] = str(tmp / "model-dir" / "model")
    doc["model"]["public_key"] = str(tmp / "keys" / "bob.pub")
    doc["dealer"]["port"] = free_port()
    doc["tls"] = {"ca": str(tmp / "keys" / "ca.pem"), "certs": str(tmp / "keys")}
    doc["run_dir"] = str(tmp / "run")
    path = tmp / "serve-text.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process, timeout_s=600)
        yield tmp, path, client
    finally:
        client.close()
        _stop(process, path)


def _plaintext_accuracy(made: Path, rows: int) -> float:
    # the packed program itself, in plaintext, on the first `rows` held-out sentences
    from tokenizers import Tokenizer

    from smpc.model.execute import run_program
    from smpc.model import pack
    from smpc.model.buckets import Bucket

    tokenizer = Tokenizer.from_file(str(made / "model" / "tokenizer.json"))  # pads to 16 tokens
    encodings = tokenizer.encode_batch((made / "heldout.txt").read_text().splitlines()[:rows])
    labels = torch.tensor([int(v) for v in (made / "heldout-labels.txt").read_text().split()[:rows]])
    program = pack.load_bucket(made / "model", Bucket(rows, 16))
    pack.load_owner_secret(program, made / "model")
    inputs = {
        s.name: s.encode(torch.tensor([getattr(e, "ids" if s.kind == "ids" else "attention_mask") for e in encodings]))
        for s in program.inputs
    }
    with torch.no_grad():
        logits = run_program(program, program.secret, inputs)[0]
    return round(float((logits.argmax(-1) == labels).double().mean()), 4)


@pytest.mark.parametrize("concurrency", [1, 16])
def test_text_queries_give_the_plaintext_accuracy(text_service, concurrency):
    tmp, path, _ = text_service
    report_path = tmp / f"report-{concurrency}.json"
    rows = ["--rows", "8"] if concurrency == 1 else []
    done = subprocess.run(
        [
            SMPC,
            "query",
            str(path),
            "--client",
            "analyst",
            "--text",
            str(tmp / "model-dir" / "heldout.txt"),
            "--labels",
            str(tmp / "model-dir" / "heldout-labels.txt"),
            "--concurrency",
            str(concurrency),
            "--report",
            str(report_path),
            *rows,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    if concurrency == 16:  # every held-out sentence
        plaintext = float((tmp / "model-dir" / "plaintext-accuracy.txt").read_text())
        assert report["samples"] == 100 and report["accuracy"] == plaintext
    else:
        assert report["samples"] == 8 and report["accuracy"] == _plaintext_accuracy(tmp / "model-dir", 8)
    assert report["service"] == {
        "model": "reviews",
        "comparisons": "fss",
        "truncation": "dealer",
        "range_checks": False,
    }
    assert report["latency_ms"]["p50"] > 0 and report["throughput_qps"] > 0 and report["bytes_per_query_per_party"] > 0


def test_text_from_python_and_its_mistakes(text_service):
    tmp, path, client = text_service
    sentences = (tmp / "model-dir" / "heldout.txt").read_text().splitlines()[:3]
    logits = client.infer_text(sentences)
    assert logits.shape == (3, 2)
    with pytest.raises(
        ValueError, match=r"sentence 1 has \d+ tokens; the longest length served is 16 \(serving.truncate_text"
    ):
        client.infer_text(["the film " * 20])
    bad = subprocess.run(
        [
            SMPC,
            "query",
            str(path),
            "--client",
            "analyst",
            "--text",
            str(tmp / "model-dir" / "heldout.txt"),
            "--labels",
            str(tmp / "nowhere.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "nowhere.txt: labels file not found" in bad.stderr
