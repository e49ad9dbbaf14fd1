"""Run a whole config on this machine: preflight checks, party processes, the report."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch

from smpc.runs.processes import Child, Outcome, supervise
from smpc import artifacts, keys
from smpc.config import Config, load_config
from smpc.model.program import Program
from smpc.errors import ConfigError, FidelityError, PartyError
from smpc.records import PartyFailure, PartyResult
from smpc.model.execute import run_program
from smpc.model import pack, ranges
from smpc.protocols import top_k
from smpc.runfiles import (
    CLASSES,
    audit_path,
    error_path,
    load_output_fields,
    log_path,
    output_path,
    result_path,
    write_json,
)


@dataclass
class Report:
    """What a run measured. Accuracy fields are None when the data has no labels.
    `parties` holds, per party: bytes_sent, rounds, peak_rss_mib, and layers (the cost
    profile: one row per model layer and op inside it, and for input sharing, output
    reveal and setup, each with layer, op, elements, bytes_sent, rounds, seconds and
    key_bytes, the dealer's material it used; smpc.meter.LayerMeter); the
    split of bytes and rounds spent in comparisons and truncations; with
    comparisons: fss, the dealer's key bytes (in total and per comparison element).

    The plaintext reference (accuracy_plain, agreement, max_abs_error) is computed by
    the launcher, which in a one-machine simulation can read both the weights and the
    data; no party ever sees both.
    """

    samples: int
    accuracy_mpc: float | None
    accuracy_plain: float | None
    agreement: float
    max_abs_error: float | None  # None when every receiver learned only top-k classes
    wall_s: float
    online_s: float
    offline_s: float
    randomness: str
    parties: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparisons: str = "circuits"  # protocol.comparisons
    truncation: str = "local"  # the two-party truncation run (Config.plan.truncation)
    # the dealer's summary: offline_s, batches, bytes_sent, bytes_per_batch, generation_s_per_batch
    dealer: dict[str, Any] | None = None
    config: str = ""
    # per output: the worst cosine to plaintext over its rows (unmasked tokens) and max |error|
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    fidelity: str = "ok"
    # what each output party learned: "logits", or "topK" (class indices only)
    revealed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def summary(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a (no labels)" if v is None else f"{100 * v:.2f}%"

        lines = [
            f"samples            {self.samples}",
            f"accuracy (MPC)     {pct(self.accuracy_mpc)}",
            f"accuracy (plain)   {pct(self.accuracy_plain)}",
            f"top-1 agreement    {pct(self.agreement)}",
            f"max |logit error|  {'n/a (only classes revealed)' if self.max_abs_error is None else f'{self.max_abs_error:.6f}'}",
            f"revealed           {', '.join(f'{k}: {v}' for k, v in self.revealed.items())}",
            f"wall time          {self.wall_s:.2f} s (offline {self.offline_s:.2f} s, online {self.online_s:.2f} s;"
            f" randomness: {self.randomness}; comparisons: {self.comparisons}; truncation: {self.truncation})",
        ]
        for name, o in self.outputs.items():
            lines.append(
                f"output {name:<12} worst cosine to plaintext {o['min_cosine']:.6f}, max |error| {o['max_abs_error']:.6f}"
            )
        if self.dealer is not None and "generation_s_per_batch" in self.dealer:
            lines.append(
                f"dealer             sent {self.dealer['bytes_sent'] / 2**20:.2f} MiB"
                f" ({self.dealer['bytes_per_batch'] / 2**20:.2f} MiB a batch, generated in"
                f" {self.dealer['generation_s_per_batch']:.2f} s)"
            )
        for name, p in self.parties.items():
            lines.append(
                f"party {name:<12} sent {p['bytes_sent'] / 2**20:.2f} MiB in {p['rounds']} rounds"
                f" (comparisons {p.get('comparisons_bytes', 0) / 2**20:.2f} MiB in {p.get('comparisons_rounds', 0)},"
                f" truncations {p.get('truncations_bytes', 0) / 2**20:.2f} MiB in {p.get('truncations_rounds', 0)}),"
                f" peak memory {p['peak_rss_mib']:.0f} MiB"
            )
            if p.get("offline_rounds"):
                lines.append(
                    f"{'':<19}offline: sent {p['offline_bytes'] / 2**20:.2f} MiB in {p['offline_rounds']} rounds"
                    " making the material with the other party (randomness: two-party)"
                )
            if p.get("key_bytes"):
                per = p.get("key_bytes_per_comparison")
                lines.append(
                    f"{'':<19}received {p['key_bytes'] / 2**20:.2f} MiB of FSS keys from the dealer ({per:.0f} bytes per comparison)"
                    if per is not None
                    else f"{'':<19}received {p['key_bytes'] / 2**20:.2f} MiB of truncation masks from the dealer"
                )
            widths = p.get("comparison_widths") or {}
            if widths and set(widths) != {"64"}:  # some comparisons were narrowed
                lines.append(
                    f"{'':<19}comparisons by width: "
                    + ", ".join(
                        f"{bits} bits x {w['comparisons']:,} ({w['key_bytes_per_comparison']:.0f} B each)"
                        for bits, w in sorted(widths.items(), key=lambda kv: int(kv[0]))
                    )
                )
        return "\n".join(lines)


def preflight(config: Config) -> Program:
    """Check every party's files and that the model converts, before starting anyone.

    Returns the program with the owner's weights (verified), kept for the plaintext reference."""
    if config.serving is not None:
        raise ConfigError(f"{config.source}: serving: this config describes a service: start it with `smpc serve`")
    program = pack.build_program(config, config.model_owner.weights)
    top_k.check_supported(config, program)
    for owner in config.data_owners:
        pack.load_rows(config, program, owner.data)
    if config.plan.transport == "tls":
        keys.check_identities(config, config.plan.processes)
    return program


def run(
    config: Config | str | Path, report_path: str | Path | None = None, echo: bool = True, warn_local: bool = True
) -> Report:
    """Run every party of `config` as its own process on this machine.

    Args:
        config: a Config loaded from a file, or the path of the YAML file.
        report_path: where to also write the report as JSON.
        echo: relay party output to the console, prefixed with the party name.
        warn_local: warn on stderr that randomness "local" is a simulation (callers
            that launch many runs say it once themselves).

    Returns:
        The Report. Raises ConfigError/ArtifactError/ConversionError before anything
        starts, or PartyError (root cause first) when a party fails or time runs out.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    program = preflight(config)
    if config.randomness == "local" and warn_local:
        print(
            "warning: randomness is 'local' (CrypTen's TFP): every party can derive the Beaver triples, "
            "so this run is a simulation, not secure; use randomness: dealer for a trusted dealer",
            file=sys.stderr,
        )
    config.run_dir.mkdir(parents=True, exist_ok=True)
    for name in config.plan.processes:
        for stale in (
            result_path(config, name),
            error_path(config, name),
            output_path(config, name),
            audit_path(config, name),
        ):
            stale.unlink(missing_ok=True)
    children = processes_of(config, config.plan.processes, "party")
    started = time.perf_counter()
    outcome = supervise(children, deadline_s=config.timeouts.run_s, echo=echo)
    wall_s = time.perf_counter() - started
    if outcome.failed or outcome.timed_out:
        raise PartyError(failure_message(config, outcome))

    records = {name: PartyResult.read(result_path(config, name)) for name in config.names}
    report, failures, batches = _evaluate(config, program, records, wall_s)
    if config.dealer is not None:
        report.dealer = json.loads(result_path(config, "dealer").read_text())
    if failures:
        report.fidelity = f"fidelity check failed: {'; '.join(failures)}; {ranges.likely_cause(program, batches[:4])}"
    if report_path is not None:
        write_json(Path(report_path), json.loads(report.to_json()))
    if failures:
        raise FidelityError(report.fidelity)
    return report


def processes_of(config: Config, names: Sequence[str], command: str) -> list[Child]:
    """The processes to supervise, each logging to run_dir: the dealer (`smpc dealer`), and
    each party run by `command` (`party` for a one-off run, `serve` for a service), the
    same commands that run one process per host (`python -m launch` is `smpc`)."""
    launch = [sys.executable, "-m", "launch"]
    return [
        Child(
            name=name,
            argv=[*launch, "dealer", str(config.source)]
            if name == "dealer"
            else [*launch, command, str(config.source), "--name", name],
            log_path=log_path(config, name),
        )
        for name in names
    ]


def failure_message(config: Config, outcome: Outcome) -> str:
    """The root cause first (the earliest failure), then the others, and where the logs are."""
    reports: dict[str, PartyFailure | None] = {}
    for child in outcome.children:
        path = error_path(config, child.name)
        # a party that failed by itself may still be leaving (its report written) when
        # the launcher stops it because a peer that it took down exited first
        if child in outcome.failed or (child.stopped_by_us and path.exists()):
            reports[child.name] = PartyFailure.read(path) if path.exists() else None

    def reason(child: Child) -> str:
        report = reports[child.name]
        said = report.message if report is not None else "no error report (died without one)"
        how = "stopped by the launcher as it was leaving" if child.stopped_by_us else child.describe_exit()
        return f"party {child.name} failed ({how}): {said}"

    # in the order they ended, then those stopped while leaving
    failed = list(outcome.failed) + [c for c in outcome.children if c.stopped_by_us and c.name in reports]
    records = {name: report for name, report in reports.items() if report is not None}
    if len(records) == len(reports):
        # a party that refuses leaves the session before it exits, and its peers fail
        # the moment it leaves: when each says when its failure happened, the earliest is the root cause
        failed.sort(key=lambda c: records[c.name].time)
    if outcome.timed_out and not failed:
        lines = [f"{config.source}: run did not finish within timeouts.run_s = {config.timeouts.run_s:g} s"]
    else:
        lines = [reason(failed[0])]
        lines += [f"  then {reason(c)}" for c in failed[1:]]
    stopped = [c.name for c in outcome.children if c.stopped_by_us]
    if stopped:
        lines.append(f"  stopped by the launcher: {', '.join(stopped)}")
    lines.append(f"  logs: {config.run_dir}")
    return "\n".join(lines)


def _plain_batches(config: Config, program: Program, rows: artifacts.InputData) -> list[dict[str, torch.Tensor]]:
    # the inputs as the parties share them (one-hot ids, 0/1 masks), padded to full batches
    out = []
    for start in range(0, rows.rows, config.batch_size):
        feeds = {}
        for spec in program.inputs:
            part = spec.encode(rows.inputs[spec.name][start : start + config.batch_size])
            pad = config.batch_size - len(part)
            feeds[spec.name] = torch.cat([part, torch.zeros(pad, *part.shape[1:])]) if pad else part
        out.append(feeds)
    return out


def _row_mask(program: Program, rows: artifacts.InputData, output: torch.Tensor) -> torch.Tensor:
    # rows (tokens) that carry meaning: a 0/1 input of the output's leading shape masks the rest
    for spec in program.inputs:
        value = rows.inputs[spec.name]
        if spec.kind == "binary" and output.dim() >= 3 and tuple(value.shape) == tuple(output.shape[:-1]):
            return value.bool()
    return torch.ones(output.shape[:-1] if output.dim() > 1 else output.shape, dtype=torch.bool)


def _cosines(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    # per row (the last axis); two rows that are both ~0 agree
    if got.dim() == 1:
        got, want = got.unsqueeze(-1), want.unsqueeze(-1)
    got, want = got.double(), want.double()
    norms = got.norm(dim=-1) * want.norm(dim=-1)
    cos = (got * want).sum(-1) / norms.clamp_min(1e-12)
    return torch.where((got.norm(dim=-1) < 1e-4) & (want.norm(dim=-1) < 1e-4), torch.ones_like(cos), cos)


def _evaluate(
    config: Config, program: Program, records: dict[str, PartyResult], wall_s: float
) -> tuple[Report, list[str], list[dict[str, torch.Tensor]]]:
    # Each data owner's rows as its receiver saw them, checked against the same program
    # run in plain PyTorch with the owner's weights. A top-k receiver holds class indices
    # only: its rows count for agreement and accuracy, not for cosine or error.
    names = [name for name, _ in program.outputs]
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    plain: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    masks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    predicted, expected, kept, labels, all_batches = [], [], [], [], []
    offset = 0
    for owner in config.data_owners:
        rows = pack.load_rows(config, program, owner.data)
        receiver = config.receivers_of(owner)[0]
        fields = load_output_fields(config, receiver.name)
        if config.model.program is None and receiver.reveal == "logits":
            fields = {names[0]: fields["outputs"]}
        batches = _plain_batches(config, program, rows)
        all_batches += batches
        with torch.no_grad():
            results = [run_program(program, program.secret, feeds) for feeds in batches]
        references = [torch.cat([r[i] for r in results])[: rows.rows] for i in range(len(names))]

        # this owner's rows of what the receiver holds (a receiver that owns no data holds every row)
        mine = slice(None) if receiver.name == owner.name else slice(offset, offset + rows.rows)

        if receiver.reveal != "logits":
            predicted.append(fields[CLASSES][mine][:, 0])
            expected.append(references[0].argmax(-1))
            kept.append(torch.ones(rows.rows, dtype=torch.bool))
        else:
            for i, name in enumerate(names):
                seen[name].append(fields[name][mine])
                plain[name].append(references[i])
                masks[name].append(_row_mask(program, rows, references[i]))
            if references[0].dim() > 1:
                predicted.append(seen[names[0]][-1].argmax(-1))
                expected.append(references[0].argmax(-1))
                kept.append(masks[names[0]][-1])
        offset += rows.rows
        labels.append(rows.labels)
    per_output, failures = {}, []
    fidelity = config.fidelity
    for name in names:
        if not seen[name]:
            continue
        got, want, keep = torch.cat(seen[name]), torch.cat(plain[name]), torch.cat(masks[name])
        cos = float(_cosines(got, want)[keep].min())
        err = float((got - want).abs()[keep].max())
        per_output[name] = {"min_cosine": round(cos, 7), "max_abs_error": err}
        if fidelity.min_cosine is not None and not cos >= fidelity.min_cosine:
            failures.append(
                f"output {name}: worst cosine to plaintext {cos:.4g} < fidelity.min_cosine {fidelity.min_cosine:g}"
            )
        if fidelity.max_abs_error is not None and not err <= fidelity.max_abs_error:
            failures.append(f"output {name}: max |error| {err:.4g} > fidelity.max_abs_error {fidelity.max_abs_error:g}")
    agreement = 1.0
    if predicted:
        keep = torch.cat(kept)
        agreement = float((torch.cat(predicted) == torch.cat(expected))[keep].float().mean())
    if fidelity.min_agreement is not None and agreement < fidelity.min_agreement:
        failures.append(
            f"output {names[0]}: top-1 agreement {agreement:.2%} < fidelity.min_agreement {fidelity.min_agreement:.2%}"
        )
    classified = bool(predicted) and torch.cat(predicted).dim() == 1
    known = (
        None
        if any(lab is None for lab in labels) or not classified
        else torch.cat([lab for lab in labels if lab is not None])
    )
    report = Report(
        samples=sum(len(e) for e in expected) if expected else sum(len(p) for p in plain[names[0]]),
        accuracy_mpc=None if known is None else float((torch.cat(predicted) == known).float().mean()),
        accuracy_plain=None if known is None else float((torch.cat(expected) == known).float().mean()),
        agreement=agreement,
        max_abs_error=per_output[names[0]]["max_abs_error"] if names[0] in per_output else None,
        wall_s=round(wall_s, 3),
        online_s=max(r.online_s for r in records.values()),
        offline_s=max(r.offline_s for r in records.values()),
        randomness=config.randomness,
        parties={n: r.reported() for n, r in records.items()},
        comparisons=config.protocol.comparisons,
        truncation=config.plan.truncation,
        config=str(config.source),
        outputs=per_output,
        fidelity="ok",
        revealed={p.name: p.reveal for p in config.parties if "output" in p.roles},
    )
    return report, failures, all_batches
