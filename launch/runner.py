"""Run a whole config on this machine: preflight checks, party processes, the report."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from launch.processes import Child, supervise
from smpc import artifacts, model_dir, zoo
from smpc.runfiles import audit_path, error_path, load_outputs, log_path, output_path, result_path, write_json
from smpc.config import Config, load_config
from smpc.convert import convert
from smpc.errors import ArtifactError, PartyError


@dataclass
class Report:
    """What a run measured. Accuracy fields are None when the data has no labels.
    `parties` holds, per party: bytes_sent, rounds, peak_rss_mib, and layers (bytes,
    rounds and seconds per model layer, input sharing, output reveal and setup).

    The plaintext reference (accuracy_plain, agreement, max_abs_error) is computed by
    the launcher, which in a one-machine simulation can read both the weights and the
    data; no party ever sees both.
    """

    samples: int
    accuracy_mpc: float | None
    accuracy_plain: float | None
    agreement: float
    max_abs_error: float
    wall_s: float
    online_s: float
    offline_s: float
    randomness: str
    parties: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: str = ""

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
            f"max |logit error|  {self.max_abs_error:.6f}",
            f"wall time          {self.wall_s:.2f} s (offline {self.offline_s:.2f} s, online {self.online_s:.2f} s;"
            f" randomness: {self.randomness})",
        ]
        for name, p in self.parties.items():
            lines.append(
                f"party {name:<12} sent {p['bytes_sent'] / 2**20:.2f} MiB in {p['rounds']} rounds,"
                f" peak memory {p['peak_rss_mib']:.0f} MiB"
            )
        return "\n".join(lines)


def preflight(config: Config) -> torch.nn.Module:
    """Check every party's files and that the model converts, before starting anyone.

    Returns the owner's model (verified and loaded), kept for the plaintext reference."""
    model = zoo.build(config.model.architecture)
    model_dir.load_owner_weights(model, config.model_owner.weights, config.model)
    for owner in config.data_owners:
        artifacts.load_data(owner.data, config.model.input_shape)
    if config.effective_transport == "tls":
        for name in config.names + (["dealer"] if config.dealer is not None else []):
            for path in config.tls_files(name):
                if not path.is_file():
                    raise ArtifactError(f"{path}: TLS file for {name} not found (create keys with `smpc keys init`)")
    convert(model, torch.zeros(config.batch_size, *config.model.input_shape))
    return model


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
    model = preflight(config)
    if config.randomness == "local" and warn_local:
        print(
            "warning: randomness is 'local' (CrypTen's TFP): every party can derive the Beaver triples, "
            "so this run is a simulation, not secure; use randomness: dealer for a trusted dealer",
            file=sys.stderr,
        )
    config.run_dir.mkdir(parents=True, exist_ok=True)
    processes = (["dealer"] if config.dealer is not None else []) + config.names
    for name in processes:
        for stale in (result_path(config, name), error_path(config, name), output_path(config, name), audit_path(config, name)):
            stale.unlink(missing_ok=True)

    children = [
        Child(
            name=name,
            argv=[sys.executable, "-m", "smpc.dealer", str(config.source)]
            if name == "dealer"
            else [sys.executable, "-m", "parties", str(config.source), "--name", name],
            log_path=log_path(config, name),
        )
        for name in processes
    ]
    started = time.perf_counter()
    outcome = supervise(children, deadline_s=config.timeouts.run_s, echo=echo)
    wall_s = time.perf_counter() - started
    if outcome.failed or outcome.timed_out:
        raise PartyError(_failure_message(config, outcome))

    records = {name: json.loads(result_path(config, name).read_text()) for name in config.names}
    report = _evaluate(config, model, records, wall_s)
    if report_path is not None:
        write_json(Path(report_path), json.loads(report.to_json()))
    return report


def _failure_message(config: Config, outcome) -> str:
    reports = {}
    for child in outcome.failed:
        path = error_path(config, child.name)
        reports[child.name] = json.loads(path.read_text()) if path.exists() else None

    def reason(child: Child) -> str:
        said = reports[child.name]["message"] if reports[child.name] else "no error report (died without one)"
        return f"party {child.name} failed ({child.describe_exit()}): {said}"

    failed = list(outcome.failed)  # in the order they ended
    if all(reports.values()):
        # a party that refuses leaves the session before it exits, and its peers fail
        # the moment it leaves: when each says when its failure happened, the earliest is the root cause
        failed.sort(key=lambda c: reports[c.name]["time"])
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


def _evaluate(config: Config, model: torch.nn.Module, records: dict[str, dict[str, Any]], wall_s: float) -> Report:
    # Each data owner's rows as its receiver saw them, checked against plain PyTorch.
    model.eval()
    seen, plain, labels = [], [], []
    offset = 0
    for owner in config.data_owners:
        data = artifacts.load_data(owner.data, config.model.input_shape)
        receiver = config.receivers_of(owner)[0]
        revealed = load_outputs(config, receiver.name)
        if receiver.name != owner.name:  # a receiver that owns no data holds every row
            revealed = revealed[offset : offset + len(data.inputs)]
        offset += len(data.inputs)
        with torch.no_grad():
            plain.append(torch.cat([model(data.inputs[i : i + 256]) for i in range(0, len(data.inputs), 256)]))
        seen.append(revealed)
        labels.append(data.labels)
    logits, reference = torch.cat(seen), torch.cat(plain)
    known = None if any(lab is None for lab in labels) else torch.cat(labels)
    return Report(
        samples=len(reference),
        accuracy_mpc=None if known is None else float((logits.argmax(1) == known).float().mean()),
        accuracy_plain=None if known is None else float((reference.argmax(1) == known).float().mean()),
        agreement=float((logits.argmax(1) == reference.argmax(1)).float().mean()),
        max_abs_error=float((logits - reference).abs().max()),
        wall_s=round(wall_s, 3),
        online_s=max(r["online_s"] for r in records.values()),
        offline_s=max(r["offline_s"] for r in records.values()),
        randomness=config.randomness,
        parties={
            n: {k: r[k] for k in ("bytes_sent", "rounds", "peak_rss_mib", "layers")} for n, r in records.items()
        },
        config=str(config.source),
    )
