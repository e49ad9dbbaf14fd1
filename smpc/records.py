"""The records a process leaves for its launcher, as frozen dataclasses that the writer
and the reader share (torch.distributed.elastic's ProcessFailure and RunResult are the
model): why a process failed (`PartyFailure`), and what a party of a one-off run
measured (`PartyResult`). Both travel as JSON files in run_dir (smpc.runfiles)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smpc.errors import PartyError, SmpcError, failed_at

INTERNAL = "internal"  # the code of a failure that is not an SmpcError (a bug, a library giving up)


@dataclass(frozen=True)
class PartyFailure:
    """Why one process (a party, or "dealer") failed: written by the process as it ends
    (smpc.runfiles.fail), read by the launcher that supervised it. The root cause of a
    failed run is the failure with the earliest `time`."""

    party: str
    message: str  # the one line the process printed after `error: `
    time: float  # when it happened (seconds since the epoch), not when it was reported
    code: str  # the exception's code (SmpcError.code), or INTERNAL

    @classmethod
    def of(cls, party: str, exc: BaseException) -> PartyFailure:
        """The record of `exc` ending process `party`."""
        if isinstance(exc, SmpcError):
            return cls(party, str(exc), failed_at(exc), exc.code)
        return cls(
            party, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", failed_at(exc), INTERNAL
        )

    def write(self, path: Path) -> None:
        """Write the record atomically: a reader sees all of it or none."""
        _write(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> PartyFailure:
        """The record at `path` (PartyError when it is not one: a process wrote it)."""
        try:
            doc: Any = json.loads(path.read_text())
            record = cls(str(doc["party"]), str(doc["message"]), float(doc["time"]), str(doc["code"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PartyError(f"{path}: not a failure record ({exc})") from None
        if not math.isfinite(record.time):
            raise PartyError(f"{path}: not a failure record (time {record.time})")
        return record


@dataclass(frozen=True)
class PartyResult:
    """What one party of a one-off run did and measured: written by the party
    (parties.one_off.run_party), read by the launcher (its report's `parties`). Counts are
    this party's own; fields that only some parties have are None elsewhere."""

    party: str
    rank: int
    samples: int  # rows computed
    connect_s: float  # joining the other parties
    offline_s: float  # the dealer's material for the first batches, or the two-party material
    online_s: float
    wall_s: float
    rounds: int  # of the session, the two-party offline phase's apart (offline_rounds)
    bytes_sent: int
    comm_time_s: float  # CrypTen's own count of the time spent communicating
    comparisons: str  # protocol.comparisons
    truncation: str  # the two-party truncation run (Config.plan.truncation)
    comparisons_bytes: int  # sent in comparisons (the runtime's ProtocolMeter)
    comparisons_rounds: int
    truncations_bytes: int  # sent in the dealer's truncations
    truncations_rounds: int
    peak_rss_mib: float
    random_bytes: int  # drawn from the secure generator
    layers: list[dict[str, Any]]  # the cost profile (smpc.meter.LayerMeter)
    bytes_per_peer: dict[str, int] | None = None  # over TLS only
    key_bytes: int | None = None  # the dealer's FSS key (and truncation mask) bytes received
    gates: dict[str, int] | None = None  # FSS gates evaluated, by kind
    key_bytes_per_comparison: float | None = None
    comparison_widths: dict[str, dict[str, Any]] | None = None  # by width in bits
    offline_bytes: int | None = None  # randomness: two-party: sent making the material, apart from bytes_sent
    offline_rounds: int | None = None
    dealer_wait_s: float | None = None  # waiting for the dealer's material
    dealer_bytes_received: int | None = None
    output_file: str | None = None  # an output party's revealed outputs
    output_rows: int | None = None
    revealed: str | None = None  # "logits" or "topK"
    accuracy_mpc: float | None = None  # when the data owner's rows have labels

    # what a party contributes to the report (Report.parties), when it has it
    REPORTED = (
        "bytes_sent",
        "rounds",
        "offline_bytes",
        "offline_rounds",
        "peak_rss_mib",
        "comparisons_bytes",
        "comparisons_rounds",
        "truncations_bytes",
        "truncations_rounds",
        "key_bytes",
        "key_bytes_per_comparison",
        "comparison_widths",
        "gates",
        "dealer_bytes_received",
        "layers",
    )

    def reported(self) -> dict[str, Any]:
        """The fields the report shows for this party, without the ones it does not have."""
        return {k: getattr(self, k) for k in self.REPORTED if getattr(self, k) is not None}

    def write(self, path: Path) -> None:
        """Write the record atomically (the fields it does not have left out)."""
        _write(path, {k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def read(cls, path: Path) -> PartyResult:
        """The record at `path` (PartyError when it is not one)."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            doc = json.loads(path.read_text())
            unknown = set(doc) - names
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            hints = typing.get_type_hints(cls)
            wrong = [
                f"{k} is {type(v).__name__}, not {_named(hints[k])}" for k, v in doc.items() if not _fits(v, hints[k])
            ]
            if wrong:
                raise ValueError(", ".join(wrong))
            return cls(**doc)
        except (OSError, ValueError, TypeError) as exc:
            raise PartyError(f"{path}: not a party's result record ({exc})") from None


def _fits(value: Any, hint: Any) -> bool:
    # a JSON value against a field's type: the scalars, None, and lists and dicts by
    # their outer type (what they hold is the cost profile's and the report's to read)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _named(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _write(path: Path, doc: dict[str, Any]) -> None:
    # atomically: a reader sees all of it or none
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    tmp.replace(path)
