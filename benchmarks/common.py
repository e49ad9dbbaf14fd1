"""Shared by the benchmark scripts: configs on free local ports, one launch each."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import torch
import yaml

from launch import Report, run
from smpc import artifacts, keys, zoo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_model(
    work: Path,
    label: str,
    architecture: str,
    input_shape: tuple[int, ...],
    batch: int,
    batches: int,
    parties: int = 2,
    randomness: str = "local",
    weights: Path | None = None,
    transport: str = "gloo",
) -> tuple[Report, torch.nn.Module]:
    """Run `batches` batches of random inputs through `architecture` with real party
    processes: alice (data, output), bob (model), then helpers. Random weights
    (seed 0) unless `weights` is given; with transport "tls", fresh consortium keys.
    Returns the report and the plaintext model."""
    torch.manual_seed(0)
    model = zoo.build(architecture)
    if weights is None:
        weights = work / f"{architecture}.safetensors"
        artifacts.save_weights(model, weights)
    else:
        artifacts.load_weights(model, weights)
    slug = label.replace(" ", "_").replace("=", "")
    data = work / f"{slug}.safetensors"
    artifacts.save_data(data, torch.rand(batch * batches, *input_shape, generator=torch.Generator().manual_seed(1)))
    members: list[dict[str, Any]] = [
        {"name": "alice", "host": "127.0.0.1", "port": free_port(), "roles": ["data_owner", "output"], "data": str(data)},
        {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": str(weights)},
    ]
    members += [{"name": f"helper{i}", "host": "127.0.0.1", "port": free_port()} for i in range(parties - 2)]
    doc: dict[str, Any] = {
        "parties": members,
        "model": {"architecture": architecture, "input_shape": list(input_shape)},
        "batch_size": batch,
        "randomness": randomness,
        "run_dir": str(work / "runs" / slug),
    }
    if randomness == "dealer":
        doc["dealer"] = {"host": "127.0.0.1", "port": free_port()}
    doc["transport"] = transport
    if transport == "tls":
        certs = work / "keys"
        if not (certs / "ca.pem").exists():
            keys.create_ca(certs)
            for member in members + [{"name": "dealer"}]:
                keys.issue(certs, member["name"])
        doc["tls"] = {"ca": str(certs / "ca.pem"), "certs": str(certs)}
    config = work / f"{slug}.yaml"
    config.write_text(yaml.safe_dump(doc))
    return run(config, echo=False), model
