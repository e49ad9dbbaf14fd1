"""The party program: one organization's process in a joint inference.

Order of work: read and check the local config and the party's own files, convert
the model (so an unsupported model fails before anyone computes), join the other
parties, share weights and inputs, run the forward pass on shares, reveal the
output to the receivers only, and write this party's result file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from smpc import artifacts, session, zoo
from smpc.config import Config, load_config
from smpc.convert import convert
from smpc.errors import SmpcError
from smpc.execute import run_program


def result_path(config: Config, name: str) -> Path:
    """Where party `name` writes its result summary (JSON)."""
    return config.run_dir / f"{name}.result.json"


def error_path(config: Config, name: str) -> Path:
    """Where party `name` writes the reason it failed (JSON: party, message, time)."""
    return config.run_dir / f"{name}.error.json"


def output_path(config: Config, name: str) -> Path:
    """Where an output receiver writes the revealed outputs (safetensors)."""
    return config.run_dir / f"{name}.output.safetensors"


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def run_party(config: Config, name: str, progress: bool = True) -> dict[str, Any]:
    """Run one party of the joint inference described by `config`.

    Args:
        config: the validated run configuration (the same file at every party).
        name: which party this process is.
        progress: show a progress bar at the data owner.

    Returns:
        This party's result record (also written to its result file).
    """
    rank = config.rank_of(name)
    me = config.parties[rank]
    owner = config.rank_of(config.model_owner.name)
    data_rank = config.rank_of(config.data_owner.name)
    receivers = [config.rank_of(p.name) for p in config.with_role("output")]
    torch.set_num_threads(1)
    torch.manual_seed(rank)

    model = zoo.build(config.model.architecture)
    if rank == owner:
        artifacts.load_weights(model, me.weights)
    dataset = artifacts.load_data(me.data, config.model.input_shape) if rank == data_rank else None
    batch_shape = torch.Size((config.batch_size, *config.model.input_shape))
    program = convert(model, torch.zeros(batch_shape))
    del model  # from here on the weights exist only as shares

    started = time.perf_counter()
    with session.joined(
        rank,
        len(config.parties),
        config.rendezvous,
        config.timeouts.connect_s,
        config.timeouts.op_s,
        config.protocol.precision_bits,
    ):
        joined_s = time.perf_counter() - started
        samples = session.broadcast_int(None if dataset is None else len(dataset.inputs), data_rank)
        params = session.share_parameters(program, owner)
        outputs = []
        batches = range(0, samples, config.batch_size)
        if progress and rank == data_rank:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"{name}: private inference", unit="batch", file=sys.stdout, ncols=80)
        online_start = time.perf_counter()
        for start in batches:
            rows = min(config.batch_size, samples - start)
            batch = None
            if dataset is not None:
                # the last batch is padded to the converted shape; padding rows are dropped
                batch = torch.zeros(batch_shape)
                batch[:rows] = dataset.inputs[start : start + rows]
            x = session.share_input(batch, batch_shape, data_rank)
            revealed = session.reveal(run_program(program, params, x), receivers)
            if revealed is not None:
                outputs.append(revealed[:rows])
        online_s = time.perf_counter() - online_start
        stats = session.communication_stats()

    record: dict[str, Any] = {
        "party": name,
        "rank": rank,
        "samples": samples,
        "connect_s": round(joined_s, 4),
        "online_s": round(online_s, 4),
        "wall_s": round(time.perf_counter() - started, 4),
        **stats,
    }
    if outputs:
        logits = torch.cat(outputs)
        artifacts.save_outputs(output_path(config, name), logits)
        record["output_file"] = str(output_path(config, name))
        if dataset is not None and dataset.labels is not None:
            record["accuracy_mpc"] = float((logits.argmax(1) == dataset.labels).float().mean())
    write_json(result_path(config, name), record)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smpc party", description="Run exactly one party of a joint inference.")
    parser.add_argument("config", help="the run's YAML config (the same file at every party)")
    parser.add_argument("--name", required=True, help="which party of the config this process is")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run one party; on failure write its error file and exit non-zero."""
    args = build_parser().parse_args(argv)
    config = None
    try:
        config = load_config(args.config)
        config.rank_of(args.name)
        record = run_party(config, args.name, progress=not args.no_progress)
    except SmpcError as exc:
        return _fail(config, args.name, str(exc), code=2)
    except Exception as exc:  # a peer vanished, gloo gave up, a bug: report, don't hang
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _fail(config, args.name, f"{type(exc).__name__}: {first}", code=1)
    summary = {k: record[k] for k in ("samples", "online_s", "bytes_sent", "rounds")}
    if "accuracy_mpc" in record:
        summary["accuracy_mpc"] = round(record["accuracy_mpc"], 4)
    print(f"done: {json.dumps(summary)}", flush=True)
    return 0


def _fail(config: Config | None, name: str, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if config is not None:
        try:
            write_json(error_path(config, name), {"party": name, "message": message, "time": time.time()})
        except OSError:
            pass
    return code
