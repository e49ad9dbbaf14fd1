"""The party program of a one-off joint inference (`smpc party`, started by `smpc launch`).

The phases (prepare, join, agree, share the model, run, close) and the compute path are
`parties.party.Party`'s; what is particular to a one-off run is its workload (`OneOffRun`):
the data owners share their inputs batch by batch, each owner's rows of the results are
revealed to its receivers only; and this party's result file.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

import torch

from parties.party import Batch, Computed, Party, elapsed, phase
from smpc import runfiles, session
from smpc.model import ops
from smpc.config import Config
from smpc.errors import ConfigError, RangeCheckError
from smpc.meter import peak_rss_mib
from smpc.model import pack
from smpc.protocols import csprng, top_k
from smpc.records import PartyResult


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


class OneOffRun:
    """The workload of a one-off run: batches of the data owners' rows, shared by their
    owners; each owner's rows of the results revealed to its receivers only."""

    def __init__(self, party: Party, dataset: Any, counts: list[int], progress: bool) -> None:
        self.party, self.config, self.dataset, self.counts = party, party.config, dataset, counts
        config, rank = self.config, party.rank
        self.data_ranks = [config.rank_of(p.name) for p in config.data_owners]
        self.samples = sum(counts)
        self.starts = range(0, self.samples, config.batch_size)
        program = party.program
        # outputs revealed to this party, per output, in global row order
        self.mine: dict[str, list[torch.Tensor]] = (
            {output: [] for output, _ in program.outputs} if party.me.reveal == "logits" else {runfiles.CLASSES: []}
        )
        # a bar on a terminal; a log (the launcher's pipes) gets whole lines, one per batch
        self.bar = progress and rank == self.data_ranks[0] and sys.stdout.isatty()
        self.lines = rank == self.data_ranks[0] and not self.bar
        self.reveal_s = 0.0
        self._batch_start = 0.0

    def batches(self) -> Iterator[Batch]:
        party, spec_rows = self.party, self.config.batch_size
        starts: Any = self.starts
        if self.bar:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"{party.name}: private inference", unit="batch", file=sys.stdout, ncols=80)
        for index, start in enumerate(starts):
            rows = min(spec_rows, self.samples - start)
            parts = _batch_rows(self.counts, start, rows)
            x = {}
            for spec in party.program.inputs:
                pieces = []
                for d, first_row, n in parts:
                    values = None
                    if party.rank == self.data_ranks[d]:
                        values = spec.encode(
                            self.dataset.inputs[spec.name][first_row : first_row + n], str(party.me.data)
                        )
                    pieces.append(
                        session.share_input(values, torch.Size((n, *spec.share_shape[1:])), self.data_ranks[d])
                    )
                if rows < spec_rows:  # pad the last batch to the converted shape
                    pieces.append(ops.to_secret(torch.zeros(spec_rows - rows, *spec.share_shape[1:])))
                x[spec.name] = pieces[0] if len(pieces) == 1 else ops.cat(pieces, 0)
            party.meter.charge("<input sharing>", "share inputs")
            self._batch_start = time.perf_counter()
            yield Batch(party.buckets[0], index, x, context=(start, rows, parts))

    def deliver(self, batch: Batch, computed: Computed) -> None:
        party, config = self.party, self.config
        data_owners = config.data_owners
        start, rows, parts = batch.context
        offset = 0
        reveal_start = time.perf_counter()
        for d, _, n in parts:  # each data owner's rows go to its receivers only
            everyone = config.receivers_of(data_owners[d])
            for reveal in sorted({p.reveal for p in everyone}):  # what each receiver may learn
                receivers = [config.rank_of(p.name) for p in everyone if p.reveal == reveal]
                k = top_k.choice(reveal)
                if k is None:
                    for (output_name, _), out in zip(party.program.outputs, computed.outputs):
                        revealed = session.reveal(out[offset : offset + n], receivers, entitled=receivers)
                        if revealed is not None:
                            self.mine[output_name].append(revealed)
                else:  # only the indices of the first output's k best classes are opened
                    revealed = session.reveal(computed.best[k][offset : offset + n], receivers, entitled=receivers)
                    if revealed is not None:
                        self.mine[runfiles.CLASSES].append(revealed.round().long())
                party.audit.record(
                    "reveal",
                    rows=n,
                    owner=data_owners[d].name,
                    to=[config.parties[r].name for r in receivers],
                    what=reveal,
                )
            offset += n
        party.meter.charge("<output reveal>", "reveal")
        self.reveal_s += time.perf_counter() - reveal_start
        if self.lines:
            print(
                f"batch {batch.index + 1}/{len(self.starts)}: {rows} rows, "
                f"{time.perf_counter() - self._batch_start:.2f} s",
                flush=True,
            )

    def refused(self, batch: Batch, error: RangeCheckError) -> None:
        raise error  # a one-off run has no answer without this batch: every party stops


@dataclass
class _Traffic:
    """What this party's communicator counted in a window of the session (the two-party
    offline phase), to take out of its totals."""

    stats: dict[str, Any]
    per_peer: dict[str, int] | None

    @classmethod
    def now(cls) -> _Traffic:
        return cls(dict(session.communication_stats()), session.bytes_per_peer())

    def until_now(self) -> _Traffic:
        """The window from this mark to now."""
        later = _Traffic.now()
        spent = {k: later.stats[k] - self.stats[k] for k in ("bytes_sent", "rounds", "comm_time_s")}
        per_peer = None
        if later.per_peer is not None and self.per_peer is not None:
            per_peer = {k: v - self.per_peer.get(k, 0) for k, v in later.per_peer.items()}
        return _Traffic(spent, per_peer)

    def excluded_from(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` (Party.stats) without this window's traffic."""
        out = dict(record)
        for key in ("bytes_sent", "rounds", "comm_time_s"):
            if key in out:
                out[key] = out[key] - self.stats[key]
        if "bytes_per_peer" in out and self.per_peer is not None:
            out["bytes_per_peer"] = {k: v - self.per_peer.get(k, 0) for k, v in out["bytes_per_peer"].items()}
        return out


def run_party(config: Config, name: str, progress: bool = True) -> PartyResult:
    """Run one party of the joint inference described by `config`.

    Args:
        config: the validated run configuration (the same file at every party).
        name: which party this process is.
        progress: show a progress bar at the first data owner.

    Returns:
        This party's result record (also written to its result file, for the launcher).
    """
    if config.serving is not None:
        raise ConfigError(f"{config.source}: serving: this config describes a service: start it with `smpc serve`")
    party = Party(config, name)
    rank, me = party.rank, party.me
    data_ranks = [config.rank_of(p.name) for p in config.data_owners]
    party.prepare()
    program = party.program
    with phase("checked this party's files"):
        dataset = pack.load_rows(config, program, me.data) if rank in data_ranks else None

    started = time.perf_counter()
    with party.join():
        party.agree()
        party.open_material()  # party 0, and every party with comparisons: fss, read the dealer's
        stream = party.dealer.stream if party.dealer is not None else None
        joined_s = elapsed(started)
        counts = [session.broadcast_int(None if dataset is None else dataset.rows, r) for r in data_ranks]
        work = OneOffRun(party, dataset, counts, progress)
        party.share_model()

        offline_start = time.perf_counter()
        if stream is not None:  # party 0 asks for the material; the readers wait for the first batches'
            party.dealer.start_run(len(work.starts))
        party.await_material(lambda wait_s: stream is None or stream.offline_done(len(work.starts), wait_s))
        # with randomness: two-party, the parties make the material together: its traffic
        # is reported apart (offline_bytes, offline_rounds), not in bytes_sent and the rows
        party.meter.charge("<setup>", "setup")
        window = _Traffic.now()
        offline_bytes, offline_rounds = party.make_material(len(work.starts))
        window = window.until_now()
        party.meter.skip()
        offline_s = elapsed(offline_start)
        print(
            f"offline phase (the dealer's material for the first batches): {offline_s:.2f} s"
            if stream is not None
            else f"offline phase (the material of every batch, made with the other party): {offline_s:.2f} s, "
            f"{offline_bytes / 2**20:.1f} MiB sent in {offline_rounds} rounds"
            if offline_rounds
            else f"ready to compute: {offline_s:.2f} s",
            flush=True,
        )

        party.meter.charge("<setup>", "setup")  # agreement, sharing the weights, the offline phase
        online_start = time.perf_counter()
        party.run(work)
        online_s = elapsed(online_start)
        samples = work.samples
        print(f"online phase: {online_s:.2f} s ({samples} rows; revealing them took {work.reveal_s:.2f} s)", flush=True)
        stats = window.excluded_from(party.stats())

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
        "truncation": config.plan.truncation,
        **party.runtime.protocol_meter.record(),
        "peak_rss_mib": peak_rss_mib(),
        "random_bytes": csprng.bytes_drawn(),
        "layers": party.meter.layers(),
    }
    if offline_rounds:
        record["offline_bytes"] = offline_bytes
        record["offline_rounds"] = offline_rounds
    if stream is not None:
        record["dealer_wait_s"] = round(stream.wait_s, 4)
        record["dealer_bytes_received"] = stream.bytes_received
    mine = work.mine
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
        if (
            dataset is not None
            and dataset.labels is not None
            and predicted is not None
            and len(first) == len(dataset.labels)
        ):
            record["accuracy_mpc"] = float((predicted == dataset.labels).float().mean())
    result = PartyResult(**record)  # a field the record does not know fails here, in the party
    result.write(runfiles.result_path(config, name))
    return result


def party_process(config: Config, name: str, progress: bool = True) -> None:
    """`smpc party`: run one party and print its summary (the entry point's body, under
    smpc.runfiles.run_process)."""
    result = run_party(config, name, progress=progress)
    summary: dict[str, Any] = {
        "samples": result.samples,
        "online_s": result.online_s,
        "bytes_sent": result.bytes_sent,
        "rounds": result.rounds,
    }
    if result.accuracy_mpc is not None:
        summary["accuracy_mpc"] = round(result.accuracy_mpc, 4)
    print(f"done: {json.dumps(summary)}", flush=True)
