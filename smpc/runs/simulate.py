"""`smpc.simulate(model, inputs)`: one call for a developer at a laptop.

The model (defined anywhere: a script, a notebook) is packed into a temporary model
directory, so the party processes build it from data, not from the user's code; the
inputs become alice's data file, the weights bob's; real party processes (and the
dealer) run on this machine through `launch.run`, and the revealed outputs come back in
the model's own output structure beside the plaintext ones.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from smpc.runs import profile as cost_profile
from smpc.runs.runner import Report, run
from smpc import artifacts, runfiles
from smpc.config import load_config
from smpc.model import pack


@dataclass
class Simulation:
    """What `simulate` returns.

    Attributes:
        outputs: the outputs revealed to the data owner, in the model's own structure
            (a ModelOutput, a dict, a tuple or a tensor).
        plain: the same model run in plain PyTorch.
        report: the run's figures (`launch.Report`): per output the worst cosine and max
            error (`report.outputs`), bytes and rounds per party, online and offline time.
    """

    outputs: Any
    plain: Any
    report: Report

    @property
    def cosine(self) -> float:
        """The worst cosine to plaintext over every output and unmasked row."""
        return min(o["min_cosine"] for o in self.report.outputs.values())

    @property
    def max_abs_error(self) -> float:
        return max(o["max_abs_error"] for o in self.report.outputs.values())

    @property
    def online_s(self) -> float:
        return self.report.online_s

    @property
    def bytes_sent(self) -> dict[str, int]:
        return {name: p["bytes_sent"] for name, p in self.report.parties.items()}

    @property
    def rounds(self) -> dict[str, int]:
        return {name: p["rounds"] for name, p in self.report.parties.items()}


def simulate(
    model: torch.nn.Module,
    inputs: Any,
    parties: int = 2,
    randomness: str = "dealer",
    *,
    kwargs: dict[str, torch.Tensor] | None = None,
    transport: str = "gloo",
    precision_bits: int = 16,
    range_checks: bool = False,
    comparisons: str | None = None,
    truncation: str | None = None,
    fidelity: dict[str, float | None] | None = None,
    timeout_s: float = 900.0,
    op_timeout_s: float = 30.0,
    keep: str | Path | None = None,
    profile: bool = False,
    quiet: bool = False,
) -> Simulation:
    """Run `model` on `inputs` privately across real party processes on this machine.

    Args:
        model: any PyTorch module (a Hugging Face model with attn_implementation="eager").
        inputs: a tensor or a tuple of tensors, batch first (all rows form one batch).
        parties: 2..8 computing parties: alice (data owner, output), bob (model owner),
            then helpers that only compute.
        randomness: "dealer" (a trusted dealer process), "two-party" (no dealer: the two
            parties make the material together in an offline phase; small models only
            for now) or "local" (CrypTen's TFP: a simulation that is not secure).
        kwargs: tensors passed by keyword (e.g. ``attention_mask``).
        transport: "gloo" or "tls" (tls needs consortium keys: use `launch.run` for that).
        precision_bits: fixed-point fractional bits.
        range_checks: open one bit per tensor an approximation reads (protocol.range_checks).
        comparisons: "circuits" (CrypTen's), "fss" (one-round FSS gates; needs the
            dealer and 2 parties) or "ot" (the millionaires' protocol; needs
            randomness "two-party"): protocol.comparisons. None: "ot" with
            randomness "two-party", else "circuits".
        truncation: "dealer" or "local" (protocol.truncation); None: the dealer's where
            it can make it.
        fidelity: thresholds (``min_cosine``, ``max_abs_error``, ``min_agreement``);
            a result below them raises FidelityError naming the output and the likely op.
        timeout_s: bound on the whole run.
        op_timeout_s: bound on any one wait of a party (timeouts.op_s): raise it for
            batches whose dealer material takes longer than 30 s to make.
        keep: a folder to keep the packed model, config and logs in (else a temporary one).
        profile: print the cost profile (bytes, rounds and seconds per layer and op,
            largest first) of the party that sent the most; the rows are in
            ``report.parties[name]["layers"]`` either way.
        quiet: print nothing while it runs; else each process's phase lines as
            `smpc launch` prints them (``[alice] converted the model: 0.41 s``, ...).

    Returns:
        The Simulation; raises SmpcError subclasses (one line each) on failure.
    """
    from smpc.runs.processes import free_port

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    kwargs = dict(kwargs or {})
    work = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="smpc-simulate-"))
    try:
        program = pack.pack(model, args, work / "model", kwargs, buckets=False)  # one run, one shape
        values = [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)]
        artifacts.save_inputs(work / "data.safetensors", {s.name: v for s, v in zip(program.inputs, values)})
        members = [
            {
                "name": "alice",
                "host": "127.0.0.1",
                "port": free_port(),
                "roles": ["data_owner", "output"],
                "data": "data.safetensors",
            },
            {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": "model"},
        ] + [{"name": f"helper{i}", "host": "127.0.0.1", "port": free_port()} for i in range(parties - 2)]
        document: dict[str, Any] = {
            "version": 1,
            "parties": members,
            "model": {"program": "model"},
            "batch_size": pack.batch_size(program),
            "randomness": randomness,
            "transport": transport,
            "protocol": {
                "precision_bits": precision_bits,
                "range_checks": range_checks,
                **({} if comparisons is None else {"comparisons": comparisons}),
                **({} if truncation is None else {"truncation": truncation}),
            },
            "timeouts": {"run_s": timeout_s, "op_s": op_timeout_s},
            "run_dir": "run",
        }
        if fidelity is not None:
            document["fidelity"] = fidelity
        if randomness == "dealer":
            document["dealer"] = {"host": "127.0.0.1", "port": free_port()}
        (work / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        config = load_config(work / "config.yaml")
        report = run(config, echo=not quiet, warn_local=False)
        if profile:
            busiest = cost_profile.busiest(report.parties)
            print(cost_profile.table(report.parties[busiest]["layers"], busiest), flush=True)
        fields = runfiles.load_output_fields(config, "alice")
        revealed = [fields[name] for name, _ in program.outputs]
        with torch.no_grad():
            plain = model(*args, **kwargs)
        return Simulation(_restructure(program, revealed), plain, report)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _restructure(program: Any, tensors: list[torch.Tensor]) -> Any:
    # the model's own output structure (a ModelOutput stays one, with its fields)
    if program.out_spec is None:
        return tensors[0] if len(tensors) == 1 else tensors
    from torch.utils import _pytree

    return _pytree.tree_unflatten(tensors, program.out_spec)
