"""Shared by the benchmark scripts: one launch of a model on free local ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from launch import Report, run
from launch.study.bench import consortium, consortium_keys
from smpc.runs.processes import free_port
from smpc import artifacts
from smpc.model import zoo


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
    comparisons: str | None = None,
    truncation: str | None = None,
) -> tuple[Report, torch.nn.Module]:
    """Run `batches` batches of random inputs through `architecture` with real party
    processes: alice (data, output), bob (model), then helpers. Random weights
    (seed 0) unless `weights` is given; with transport "tls", fresh consortium keys;
    `comparisons` is protocol.comparisons (fss needs randomness "dealer"; None: the
    config's default), `truncation` protocol.truncation (None: the config's default).
    Returns the report and the plaintext model."""
    torch.manual_seed(0)
    model = zoo.build(architecture)
    if weights is None:
        weights = work / f"{architecture}.weights.safetensors"
        artifacts.save_weights(model, weights)
    else:
        artifacts.load_weights(model, weights)
    slug = label.replace(" ", "_").replace("=", "")
    data = work / f"{slug}.data.safetensors"
    artifacts.save_data(data, torch.rand(batch * batches, *input_shape, generator=torch.Generator().manual_seed(1)))
    doc: dict[str, Any] = {
        "parties": consortium(parties, data, weights),
        "model": {"architecture": architecture, "input_shape": list(input_shape)},
        "batch_size": batch,
        "randomness": randomness,
        "protocol": {
            **({} if comparisons is None else {"comparisons": comparisons}),
            **({} if truncation is None else {"truncation": truncation}),
        },
        "run_dir": str(work / "runs" / slug),
    }
    if randomness == "dealer":
        doc["dealer"] = {"host": "127.0.0.1", "port": free_port()}
    doc["transport"] = transport
    if transport == "tls":
        consortium_keys(work / "keys", parties)
        doc["tls"] = {"ca": str(work / "keys" / "ca.pem"), "certs": str(work / "keys")}
    config = work / f"{slug}.yaml"
    config.write_text(yaml.safe_dump(doc))
    return run(config, echo=False), model
