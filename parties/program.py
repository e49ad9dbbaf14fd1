"""The party program of a one-off joint inference (`smpc party`, started by `smpc launch`).

The phases (prepare, join, agree, share the model, close) are `parties.party.Party`'s;
what is particular to a one-off run is here: share the data owners' inputs batch by
batch, run the forward pass on shares, reveal each owner's rows to its receivers only,
and write this party's result file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from parties.party import Party, elapsed, phase
from smpc import ops, runfiles, session
from smpc.config import Config, load_config
from smpc.errors import ConfigError
from smpc.execute import run_program
from smpc.meter import peak_rss_mib, protocol_meter
from smpc.model import pack
from smpc.protocols import csprng, top_k


def _batch_rows(counts: list[int], start: int, rows: int) -> list[tuple[int, int, int]]:
    """Which data owners' rows make up global rows [start, start + rows):
    (owner index, first local row, number of rows), in order."""
    out, offset = [], 0
    for owner, count in enumerate(counts):
        lo, hi = max(start, offset), min(start + rows, offset + count)
        if lo < hi:
            out.append((owner, lo - offset, hi - lo))
        offset += count
    return out


def run_party(config: Config, name: str, progress: bool = True) -> dict[str, Any]:
    """Run one party of the joint inference described by `config`.

    Args:
        config: the validated run configuration (the same file at every party).
        name: which party this process is.
        progress: show a progress bar at the first data owner.

    Returns:
        This party's result record (also written to its result file).
    """
    if config.serving is not None:
        raise ConfigError(f"{config.source}: serving: this config describes a service: start it with `smpc serve`")
    party = Party(config, name)
    rank, me = party.rank, party.me
    data_owners = config.data_owners
    data_ranks = [config.rank_of(p.name) for p in data_owners]
    party.prepare()
    program = party.program
    with phase("checked this party's files"):
        dataset = pack.load_rows(config, program, me.data) if rank in data_ranks else None

    started = time.perf_counter()
    with party.join():
        party.agree()
        stream = None
        if party.dealer is not None:
            stream = party.dealer.open_stream()  # party 0, and every party with comparisons: fss
            party.provider.bind(rank, party.dealer.seed, stream)
        joined_s = elapsed(started)
        counts = [session.broadcast_int(None if dataset is None else dataset.rows, r) for r in data_ranks]
        samples = sum(counts)
        batches = range(0, samples, config.batch_size)
        party.share_model()

        offline_start = time.perf_counter()
        if stream is not None:  # party 0 asks for the material; they wait for batch 0's
            party.dealer.start_run(len(batches))
            stream.wait_offline(len(batches))
        session.barrier()
        offline_s = elapsed(offline_start)
        print(f"offline phase (the dealer's material for the first batches): {offline_s:.2f} s"
              if stream is not None or party.provider is not None else f"ready to compute: {offline_s:.2f} s", flush=True)

        # outputs revealed to this party, per output, in global row order
        mine: dict[str, list[torch.Tensor]] = (
            {output: [] for output, _ in program.outputs} if me.reveal == "logits" else {runfiles.CLASSES: []}
        )
        # a bar on a terminal; a log (the launcher's pipes) gets whole lines, one per batch
        bar = progress and rank == data_ranks[0] and sys.stdout.isatty()
        lines = rank == data_ranks[0] and not bar
        if bar:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"{name}: private inference", unit="batch", file=sys.stdout, ncols=80)
        reveal_s = 0.0
        meter = party.meter
        meter.charge("<setup>")  # agreement, sharing the weights, the offline phase
        online_start = time.perf_counter()
        for start in batches:
            if stream is not None:
                stream.next_batch()
            rows = min(config.batch_size, samples - start)
            parts = _batch_rows(counts, start, rows)
            x = {}
            for spec in program.inputs:
                pieces = []
                for d, first_row, n in parts:
                    values = None
                    if rank == data_ranks[d]:
                        values = spec.encode(dataset.inputs[spec.name][first_row : first_row + n], str(me.data))
                    pieces.append(session.share_input(values, torch.Size((n, *spec.share_shape[1:])), data_ranks[d]))
                if rows < config.batch_size:  # pad the last batch to the converted shape
                    pieces.append(ops.to_secret(torch.zeros(config.batch_size - rows, *spec.share_shape[1:])))
                x[spec.name] = pieces[0] if len(pieces) == 1 else ops.cat(pieces, 0)
            meter.charge("<input sharing>")
            batch_start = time.perf_counter()
            outputs = run_program(program, party.params, x, meter, checks=party.checks)
            best = {k: top_k.top_k(outputs[0], k) for k in top_k.reveal_kinds(config)}
            offset = 0
            reveal_start = time.perf_counter()
            for d, _, n in parts:  # each data owner's rows go to its receivers only
                everyone = config.receivers_of(data_owners[d])
                for reveal in sorted({p.reveal for p in everyone}):  # what each receiver may learn
                    receivers = [config.rank_of(p.name) for p in everyone if p.reveal == reveal]
                    k = top_k.choice(reveal)
                    if k is None:
                        for (output_name, _), out in zip(program.outputs, outputs):
                            revealed = session.reveal(out[offset : offset + n], receivers, entitled=receivers)
                            if revealed is not None:
                                mine[output_name].append(revealed)
                    else:  # only the indices of the first output's k best classes are opened
                        revealed = session.reveal(best[k][offset : offset + n], receivers, entitled=receivers)
                        if revealed is not None:
                            mine[runfiles.CLASSES].append(revealed.round().long())
                    party.audit.record(
                        "reveal", rows=n, owner=data_owners[d].name, to=[config.parties[r].name for r in receivers],
                        what=reveal,
                    )
                offset += n
            meter.charge("<output reveal>")
            reveal_s += time.perf_counter() - reveal_start
            if lines:
                print(f"batch {start // config.batch_size + 1}/{len(batches)}: {rows} rows, "
                      f"{time.perf_counter() - batch_start:.2f} s", flush=True)
        online_s = elapsed(online_start)
        print(f"online phase: {online_s:.2f} s ({samples} rows; revealing them took {reveal_s:.2f} s)", flush=True)
        stats = party.stats()

    record: dict[str, Any] = {
        "party": name,
        "rank": rank,
        "samples": samples,
        "connect_s": joined_s,
        "offline_s": offline_s,
        "online_s": online_s,
        "wall_s": elapsed(started),
        **stats,
        "comparisons": config.protocol.comparisons,
        "truncation": config.truncation,
        **protocol_meter.record(),
        "peak_rss_mib": peak_rss_mib(),
        "random_bytes": csprng.bytes_drawn(),
        "layers": meter.layers(),
    }
    if stream is not None:
        record["dealer_wait_s"] = round(stream.wait_s, 4)
        record["dealer_bytes_received"] = stream.bytes_received
    if any(mine.values()):
        by_output = {k: torch.cat(v) for k, v in mine.items()}
        first = next(iter(by_output.values()))
        # a zoo model's single output keeps its historical name; a packed program's outputs
        # keep theirs; a top-k receiver holds only `classes`
        saved = by_output if config.model.program is not None or me.reveal != "logits" else first
        record["output_file"] = str(runfiles.save_outputs(config, name, saved))
        record["output_rows"] = len(first)
        record["revealed"] = me.reveal
        predicted = first[:, 0] if me.reveal != "logits" else (first.argmax(1) if first.dim() == 2 else None)
        if dataset is not None and dataset.labels is not None and predicted is not None and len(first) == len(dataset.labels):
            record["accuracy_mpc"] = float((predicted == dataset.labels).float().mean())
    runfiles.write_json(runfiles.result_path(config, name), record)
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
    except Exception as exc:
        # an unknown --name gets no error file: there is no such process to report on
        known = config is not None and args.name in config.names
        return runfiles.fail(config if known else None, args.name, exc)
    summary = {k: record[k] for k in ("samples", "online_s", "bytes_sent", "rounds")}
    if "accuracy_mpc" in record:
        summary["accuracy_mpc"] = round(record["accuracy_mpc"], 4)
    print(f"done: {json.dumps(summary)}", flush=True)
    return 0

