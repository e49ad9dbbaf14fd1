"""The organization path: from a `save_pretrained` folder to a signed, calibrated launch.

What each organization does, as commands (each printed before it runs):

1. bob (the model owner) has a checkpoint in a local `save_pretrained` folder (here a
   small BERT classifier with random weights, written by this script);
2. the consortium makes its keys (`smpc keys init`: a CA, and a key and certificate for
   alice, bob and the dealer; a real consortium uses `smpc keys request` and `sign`);
3. bob packs the checkpoint into a model directory for batches of up to 2 sentences of
   up to 8 tokens (`smpc model pack`), calibrates it on sample sentences of his own
   (`smpc model calibrate`: the ranges every approximation must cover), and signs the
   directory (`smpc model sign`), last, so that the signature covers the calibration;
4. alice (the data owner) writes her token ids and attention masks to a data file;
5. the config names the packed program, bob's public key and TLS; `smpc model verify`
   checks the signature, and `smpc launch` runs both parties and the dealer.

    python examples/organization_path.py [--work DIR]
"""

import argparse
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification

SMPC = str(Path(sys.executable).parent / "smpc")


def sh(*argv: str) -> None:
    print("$ smpc " + " ".join(argv[1:]), flush=True)
    subprocess.run(argv, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences(rows: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 200, (rows, 8), generator=g)
    mask = torch.ones(rows, 8, dtype=torch.long)
    mask[::2, 6:] = 0  # every other sentence has 6 tokens
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def main(work: Path) -> int:
    # 1. bob's checkpoint
    torch.manual_seed(0)
    BertForSequenceClassification(
        BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            num_labels=3,
        )
    ).save_pretrained(work / "checkpoint")

    # 2. the consortium's keys
    sh(SMPC, "keys", "init", str(work / "keys"), "alice", "bob", "dealer")

    # 3. bob packs, calibrates, then signs
    model = work / "model"
    sh(SMPC, "model", "pack", str(work / "checkpoint"), "--out", str(model), "--batch", "2", "--seq-len", "8")
    save_file(sentences(16, seed=1), str(work / "bob-sample.safetensors"))
    sh(SMPC, "model", "calibrate", str(model), "--data", str(work / "bob-sample.safetensors"))
    sh(SMPC, "model", "sign", str(model), "--key", str(work / "keys" / "bob.key"))

    # 4. alice's data
    save_file(sentences(4, seed=2), str(work / "alice.safetensors"))

    # 5. the config every party reads, then the launch
    config = {
        "version": 1,
        "parties": [
            {
                "name": "alice",
                "host": "127.0.0.1",
                "port": free_port(),
                "roles": ["data_owner", "output"],
                "data": "alice.safetensors",
            },
            {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": "model"},
        ],
        "model": {"program": "model", "public_key": "keys/bob.pub"},
        "batch_size": 2,
        "randomness": "dealer",
        "dealer": {"host": "127.0.0.1", "port": free_port()},
        "transport": "tls",
        "tls": {"ca": "keys/ca.pem", "certs": "keys"},
        "protocol": {"range_checks": True},  # the calibrated ranges, checked on shares
        "run_dir": "runs",
    }
    (work / "deploy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sh(SMPC, "model", "verify", str(model), "--public-key", str(work / "keys" / "bob.pub"))
    sh(SMPC, "launch", str(work / "deploy.yaml"))
    print(f"alice's logits: {work / 'runs' / 'alice.output.safetensors'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="a folder to work in and keep (default: a temporary one)")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        sys.exit(main(args.work))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(tmp)))
