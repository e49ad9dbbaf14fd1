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
from parties.program import error_path, output_path, result_path, write_json
from smpc import artifacts, zoo
from smpc.config import Config, load_config
from smpc.convert import convert
from smpc.errors import PartyError


@dataclass
class Report:
    """What a run measured. Accuracy fields are None when the data has no labels.

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
            f"wall time          {self.wall_s:.2f} s (online {self.online_s:.2f} s)",
        ]
        for name, p in self.parties.items():
            lines.append(f"party {name:<12} sent {p['bytes_sent'] / 2**20:.2f} MiB in {p['rounds']} rounds")
        return "\n".join(lines)


def preflight(config: Config) -> None:
    """Check every party's files and that the model converts, before starting anyone."""
    model = zoo.build(config.model.architecture)
    artifacts.load_weights(model, config.model_owner.weights)
    artifacts.load_data(config.data_owner.data, config.model.input_shape)
    convert(model, torch.zeros(config.batch_size, *config.model.input_shape))


def run(config: Config | str | Path, report_path: str | Path | None = None, echo: bool = True) -> Report:
    """Run every party of `config` as its own process on this machine.

    Args:
        config: a Config loaded from a file, or the path of the YAML file.
        report_path: where to also write the report as JSON.
        echo: relay party output to the console, prefixed with the party name.

    Returns:
        The Report. Raises ConfigError/ArtifactError/ConversionError before anything
        starts, or PartyError (root cause first) when a party fails or time runs out.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    preflight(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    for name in config.names:
        for stale in (result_path(config, name), error_path(config, name), output_path(config, name)):
            stale.unlink(missing_ok=True)

    children = [
        Child(
            name=name,
            argv=[sys.executable, "-m", "parties", str(config.source), "--name", name],
            log_path=config.run_dir / f"{name}.log",
        )
        for name in config.names
    ]
    started = time.perf_counter()
    outcome = supervise(children, deadline_s=config.timeouts.run_s, echo=echo)
    wall_s = time.perf_counter() - started
    if outcome.failed or outcome.timed_out:
        raise PartyError(_failure_message(config, outcome))

    records = {name: json.loads(result_path(config, name).read_text()) for name in config.names}
    report = _evaluate(config, records, wall_s)
    if report_path is not None:
        write_json(Path(report_path), json.loads(report.to_json()))
    return report


def _failure_message(config: Config, outcome) -> str:
    def reason(child: Child) -> str:
        path = error_path(config, child.name)
        said = json.loads(path.read_text())["message"] if path.exists() else "no error report (died without one)"
        return f"party {child.name} failed ({child.describe_exit()}): {said}"

    if outcome.timed_out and not outcome.failed:
        lines = [f"{config.source}: run did not finish within timeouts.run_s = {config.timeouts.run_s:g} s"]
    else:
        lines = [reason(outcome.failed[0])]
        lines += [f"  then {reason(c)}" for c in outcome.failed[1:]]
    stopped = [c.name for c in outcome.children if c.stopped_by_us]
    if stopped:
        lines.append(f"  stopped by the launcher: {', '.join(stopped)}")
    lines.append(f"  logs: {config.run_dir}")
    return "\n".join(lines)


def _evaluate(config: Config, records: dict[str, dict[str, Any]], wall_s: float) -> Report:
    receivers = [p.name for p in config.with_role("output")]
    seen_by = config.data_owner.name if config.data_owner.name in receivers else receivers[0]
    logits = artifacts.load_outputs(output_path(config, seen_by))
    model = zoo.build(config.model.architecture)
    artifacts.load_weights(model, config.model_owner.weights)
    data = artifacts.load_data(config.data_owner.data, config.model.input_shape)
    model.eval()
    with torch.no_grad():
        plain = torch.cat([model(data.inputs[i : i + 256]) for i in range(0, len(data.inputs), 256)])
    labels = data.labels
    return Report(
        samples=len(plain),
        accuracy_mpc=None if labels is None else float((logits.argmax(1) == labels).float().mean()),
        accuracy_plain=None if labels is None else float((plain.argmax(1) == labels).float().mean()),
        agreement=float((logits.argmax(1) == plain.argmax(1)).float().mean()),
        max_abs_error=float((logits - plain).abs().max()),
        wall_s=round(wall_s, 3),
        online_s=max(r["online_s"] for r in records.values()),
        parties={n: {"bytes_sent": r["bytes_sent"], "rounds": r["rounds"]} for n, r in records.items()},
        config=str(config.source),
    )

