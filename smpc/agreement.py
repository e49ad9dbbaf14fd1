"""Start-up agreement: every party (and the dealer) must run the same computation.

Each side digests the settings that must match, field by field; the parties exchange
the digests over the joined group (an int64 vector, no pickle) and stop together,
naming the first field that differs. Values themselves are never exchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from smpc.config import Config
from smpc.model.program import Program
from smpc.errors import AgreementError
from smpc.model import calibrate
from smpc.protocols import fixed


def fields(config: Config, program: Program, checks: Any = None, others: Any = ()) -> dict[str, str]:
    """The settings all parties must share, each as a short hex digest, in a fixed order.

    Per-party local details (file paths, run directory) are not included. `checks` are
    the run's range checks (smpc.model.calibrate.range_checks), whose bounds must match;
    `others` a service's programs for its other shape buckets.
    """
    values = {
        "parties": [(p.name, p.host, p.port, sorted(p.roles), p.reveal) for p in config.parties],
        "model.architecture": [p.architecture_fingerprint() for p in (program, *others)],
        "model.input_shape": [[s.name, list(s.shape), s.kind, s.depth] for s in program.inputs],
        "batch_size": config.batch_size,
        "randomness": [config.randomness, None if config.dealer is None else [config.dealer.host, config.dealer.port]],
        "transport": config.plan.transport,
        "protocol.precision_bits": config.protocol.precision_bits,
        "protocol.functions": config.protocol.functions.model_dump(),
        "protocol.comparisons": config.protocol.comparisons,
        "protocol.truncation": config.plan.truncation,
        "protocol.range_checks": None if checks is None else sorted((k, list(v)) for k, v in checks.bounds.items()),
        "protocol.comparison_widths": [
            None if w is None else sorted(w.bounds.items())
            for w in (calibrate.comparison_widths(config, p) for p in (program, *others))
        ],
        # the weights whose session mask is opened once (smpc.protocols.fixed)
        "model.fixed_operands": fixed.fixed_names(program) if config.randomness == "dealer" else None,
        "serving": None if config.serving is None else config.serving.model_dump(mode="json"),
    }
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in values.items()}


def first_difference(mine: dict[str, str], theirs: dict[str, str]) -> str | None:
    """The first field whose digest differs (or is missing), else None."""
    for key in mine:
        if theirs.get(key) != mine[key]:
            return key
    extra = sorted(set(theirs) - set(mine))
    return extra[0] if extra else None


def difference(key: str, first: tuple[str, str], second: tuple[str, str], program: Path | None = None) -> str:
    """The one-line refusal when `key` differs between two sides, each a (name, digest).

    Args:
        key: the first field whose digests differ.
        first, second: who (a party's name, or "the dealer") and the field's digest there.
        program: the config's model.program; the model's fields come from that folder, so
            a difference there is the folder's, named with each side's digest.
    Returns:
        The message (of an AgreementError or the dealer's SettingsError).
    """
    if program is not None and key.startswith("model."):
        return (
            f"agreement check failed: model directory {program} differs between {first[0]} (sha256 {first[1]}) "
            f"and {second[0]} (sha256 {second[1]}): give every party the same signed directory"
        )
    return f"agreement check failed: {key} differs between {first[0]} and {second[0]} (compare their configs)"


def check_parties(config: Config, mine: dict[str, str]) -> None:
    """Compare digests with every other party; all raise together on a mismatch.

    Must be called by every party right after joining, before anything is shared.
    """
    from smpc import session

    vector = torch.tensor([int(d, 16) - (1 << 63) for d in mine.values()], dtype=torch.long)
    everyone = session.all_gather_int64(vector)
    keys = list(mine)
    for rank, theirs in enumerate(everyone):
        for i, key in enumerate(keys):
            if int(theirs[i]) != int(everyone[0][i]):
                raise AgreementError(
                    difference(
                        key,
                        (config.parties[0].name, _hex(everyone[0][i])),
                        (config.parties[rank].name, _hex(theirs[i])),
                        config.model.program,
                    )
                )


def _hex(value: torch.Tensor) -> str:
    # an exchanged int64 back to the field's hex digest (check_parties shifts it by 2^63)
    return f"{int(value) + (1 << 63):016x}"
