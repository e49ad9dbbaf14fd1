"""A model as a service, and a client that queries it without anyone seeing the query.

bob packs a small BERT classifier with `smpc.pack` for batches of up to 2 sentences of
up to 8 tokens (every smaller shape too), the consortium's keys are made (with a client
certificate for `analyst`), and `smpc serve` keeps alice, bob and the dealer standing.
The client shares its token ids on its own machine, sends one share to each party's
client API (mutual TLS), and adds up the parties' shares of the logits. It checks them
against the model run in plain PyTorch, then the service is stopped with SIGTERM (it
drains: the queries in flight are answered first).

    python examples/service_and_client.py
"""

import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification

import smpc

SMPC = str(Path(sys.executable).parent / "smpc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(client: smpc.Client, service: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and service.poll() is None:
        try:
            if all(client.get(party, "/v2/health/ready").status_code == 200 for party in ("alice", "bob")):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise SystemExit("the service did not become ready")


def main(work: Path) -> int:
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            num_labels=3,
            attn_implementation="eager",
        )
    ).eval()
    example = torch.ones(2, 8, dtype=torch.long)  # the largest query: 2 sentences of 8 tokens
    smpc.pack(model, (example,), work / "model", {"attention_mask": torch.ones_like(example)})
    subprocess.run([SMPC, "keys", "init", str(work / "keys"), "alice", "bob", "dealer", "analyst"], check=True)

    config = {
        "version": 1,
        "parties": [
            {"name": "alice", "host": "127.0.0.1", "port": free_port(), "api_port": free_port()},
            {
                "name": "bob",
                "host": "127.0.0.1",
                "port": free_port(),
                "api_port": free_port(),
                "roles": ["model_owner"],
                "weights": "model",
            },
        ],
        "model": {"program": "model"},
        "randomness": "dealer",
        "dealer": {"host": "127.0.0.1", "port": free_port()},
        "transport": "tls",
        "tls": {"ca": "keys/ca.pem", "certs": "keys"},
        "serving": {"model_name": "bert", "clients": ["analyst"], "max_batch": 2},
        "run_dir": "runs",
    }
    path = work / "service.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    service = subprocess.Popen([SMPC, "serve", str(path)])
    client = smpc.Client(path, client="analyst")
    try:
        wait_ready(client, service)
        ids = torch.tensor([[5, 17, 42, 9, 0, 0], [7, 7, 120, 3, 88, 4]])  # two sentences of 6 ids
        mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
        logits = client.infer(input_ids=ids, attention_mask=mask)
        with torch.no_grad():
            plain = model(input_ids=ids, attention_mask=mask).logits
        error = (logits - plain).abs().max().item()
        print(f"logits from the service {logits.tolist()}")
        print(f"max |error| against plain PyTorch: {error:.5f}")
    finally:
        client.close()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=120)
    return 0 if error < 1e-3 else 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(tmp)))
