"""A packed Hugging Face model served: `smpc model pack` for every batch up to B rows and
every length up to S tokens, signed, served by `smpc serve` with `model.program`, and
queried by name (`Client.infer(input_ids=..., attention_mask=...)`) with sequences of
several lengths in one query: real party processes, the dealer, HTTPS clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from smpc import keys
from smpc.serve.client import Client
from tests.harness import write_serve_config
from tests.test_serve import _start, _stop, _wait_ready

SMPC = str(Path(sys.executable).parent / "smpc")


def _bert(directory: Path) -> torch.nn.Module:
    """BertModel (hidden 64, 2 layers, 4 heads, vocabulary 400), word embeddings x0.05 and
    every intermediate.dense weight x60 (activations at real checkpoints' magnitudes)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            vocab_size=400,
            max_position_embeddings=32,
            attn_implementation="eager",
        )
    )
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(0.05)
        for layer in model.encoder.layer:
            layer.intermediate.dense.weight.mul_(60)
    model.save_pretrained(directory)
    return model.eval()


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    model = _bert(tmp / "hf")
    done = subprocess.run(
        [SMPC, "model", "pack", str(tmp / "hf"), "--out", str(tmp / "M"), "--batch", "4", "--seq-len", "16"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"packed {tmp / 'M'} (6 shapes)\n  batch sizes:      1, 2, 4 rows\n  sequence lengths: 8, 16 tokens\n"
    )
    keys.create_ca(tmp / "owner")
    keys.issue(tmp / "owner", "bob")
    signed = subprocess.run(
        [SMPC, "model", "sign", str(tmp / "M"), "--key", str(tmp / "owner" / "bob.key")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert signed.returncode == 0, signed.stderr
    return tmp, model


def _serve_config(tmp: Path, packed_dir: Path, public_key: Path, protocol: dict) -> Path:
    path = write_serve_config(tmp, max_batch=4, pool=1)
    doc = yaml.safe_load(path.read_text())
    doc["model"] = {"program": str(packed_dir), "public_key": str(public_key)}
    doc["parties"][1]["weights"] = str(packed_dir)
    doc["serving"]["model_name"] = "bert"
    doc["protocol"] = protocol
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("comparisons", ["circuits", "fss"])
def test_a_packed_bert_is_served_at_every_length(packed, tmp_path, comparisons):
    root, model = packed
    path = _serve_config(tmp_path, root / "M", root / "owner" / "bob.pub", {"comparisons": comparisons})
    process = _start(path)
    client = Client(path, client="analyst")
    try:
        _wait_ready(client, process, timeout_s=300)
        lengths = [12, 8, 5]
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(1, 400, (3, 12), generator=generator)
        mask = torch.tensor([[1] * n + [0] * (12 - n) for n in lengths])
        ids = ids * mask  # padding positions hold the pad id 0
        got = client.infer(input_ids=ids, attention_mask=mask)
        assert set(got) == {"last_hidden_state", "pooler_output"}
        hidden = got["last_hidden_state"]
        assert hidden.shape == (3, 12, 64)  # the query's own length, not the bucket's (16)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for row, n in enumerate(lengths):
            cosine = torch.nn.functional.cosine_similarity(hidden[row, :n], want[row, :n], dim=-1)
            assert float(cosine.min()) >= 0.999, (row, cosine)
        # one sequence alone, 5 tokens: the smallest bucket (1 row x 8 tokens); the same answer
        alone = client.infer(input_ids=ids[2, :5], attention_mask=mask[2, :5])["last_hidden_state"]
        assert alone.shape == (5, 64)
        assert float(torch.nn.functional.cosine_similarity(alone, want[2, :5], dim=-1).min()) >= 0.999
        metrics = client.get("alice", "/metrics").text
        assert 'smpc_batches_total{bucket_rows="4",bucket_seq="16"}' in metrics
        assert 'smpc_batches_total{bucket_rows="1",bucket_seq="8"}' in metrics
        meta = client.get("bob", "/v2/models/bert").json()
        assert meta["inputs"][0] == {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1, 400]}
        assert meta["parameters"]["max_seq"] == 16 and meta["parameters"]["seq_buckets"] == [8, 16]
        assert meta["parameters"]["protocol"]["comparisons"] == comparisons
        if comparisons == "circuits":
            _bad_inputs(client, ids, mask)
    finally:
        client.close()
        _stop(process, path)


def _bad_inputs(client: Client, ids: torch.Tensor, mask: torch.Tensor) -> None:
    # what the client can check on its own machine: values (never sent in the clear)
    with pytest.raises(ValueError, match=r"input_ids: id 400 is outside the vocabulary 0..399"):
        client.infer(input_ids=torch.full((1, 4), 400), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"attention_mask: expected 0/1 values \(a mask\), got 2"):
        client.infer(input_ids=ids[:1], attention_mask=mask[:1] * 2)
    with pytest.raises(ValueError, match=r"attention_mask: 8 tokens, the other inputs 12"):
        client.infer(input_ids=ids[:1], attention_mask=mask[:1, :8])
    with pytest.raises(ValueError, match=r"inputs: missing \['attention_mask'\]"):
        client.infer(input_ids=ids[:1])
    with pytest.raises(ValueError, match=r"a query of 17 tokens; the longest sequence served is 16"):
        client.infer(input_ids=torch.ones(1, 17, dtype=torch.long), attention_mask=torch.ones(1, 17))
    with pytest.raises(ValueError, match=r"model 'bert' has no tokenizer"):
        client.infer_text(["a sentence"])
    # what only the parties see: the shapes, names and lengths of the shares (OIP errors)
    import httpx

    from smpc import transport

    config = client.config
    alice = config.parties[0]
    context = transport.client_context(*config.client_files("analyst"))
    body = {
        "id": "x1",
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [1, 17, 400], "data": [0] * 17 * 400},
            {"name": "attention_mask", "datatype": "INT64", "shape": [1, 17], "data": [0] * 17},
        ],
    }
    cases = [
        (body, 413, "the longest sequence served is 16"),
        ({"id": "x2", "inputs": body["inputs"][:1]}, 400, r"inputs: missing \['attention_mask'\]"),
        (
            {"id": "x3", "inputs": [*body["inputs"], {"name": "token_type_ids"}]},
            400,
            r"unexpected \['token_type_ids'\]",
        ),
        (
            {
                "id": "x4",
                "inputs": [
                    {**body["inputs"][0], "shape": [1, 4, 400], "data": [0] * 1600},
                    {**body["inputs"][1], "shape": [1, 5], "data": [0] * 5},
                ],
            },
            400,
            "5 tokens, the other inputs 4",
        ),
        (
            {
                "id": "x5",
                "inputs": [
                    {**body["inputs"][0], "shape": [1, 4, 399], "data": [0] * 1596},
                    {**body["inputs"][1], "shape": [1, 4], "data": [0] * 4},
                ],
            },
            400,
            r"input_ids\)\.shape: expected \[rows, tokens, 400\]",
        ),
    ]
    with httpx.Client(verify=context, timeout=30) as http:
        for doc, status, message in cases:
            r = http.post(
                f"https://{alice.host}:{alice.api_port}/v2/models/bert/infer",
                json=doc,
                extensions={"sni_hostname": "alice"},
            )
            assert r.status_code == status, (doc["id"], r.text)
            import re

            assert re.search(message, r.json()["error"]), r.json()
        r = http.get(
            f"https://{alice.host}:{alice.api_port}/v2/models/bert/tokenizer", extensions={"sni_hostname": "alice"}
        )
        assert r.status_code == 404 and "has no tokenizer" in r.json()["error"]
    # the service goes on serving everyone else
    assert client.infer(input_ids=ids[:1], attention_mask=mask[:1])["last_hidden_state"].shape == (1, 12, 64)


def test_serving_refuses_a_max_batch_the_program_was_not_packed_for(packed, tmp_path):
    root, _ = packed
    path = _serve_config(tmp_path, root / "M", root / "owner" / "bob.pub", {})
    doc = yaml.safe_load(path.read_text())
    doc["serving"]["max_batch"] = 3
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = subprocess.run([SMPC, "serve", str(path), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert (
        "serving.max_batch: the program in" in done.stderr
        and "was packed for batches of 1, 2, 4 rows, got 3" in done.stderr
    )
