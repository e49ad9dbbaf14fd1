"""Every exception smpc raises for a failure a user sees, each with a stable `code`
(documented on a page of its own: docs/reference/errors/CODE).

Each carries one line meant for the user; no traceback is shown for them. The first
paragraph of a class's docstring says what happened, the second what to do."""

from __future__ import annotations

import time
from typing import Any, ClassVar, cast


class SmpcError(Exception):
    """A problem the user can act on, described in one line.

    Read the line: it names the file, key, party or client and what was expected."""

    code: ClassVar[str] = "error"


class ConfigError(SmpcError):
    """A configuration file is missing, malformed or inconsistent.

    Correct the key the line names (an unknown key names the closest known one); every
    problem of the file is listed at once."""

    code = "config"


class ArtifactError(SmpcError):
    """A model or data file is missing, unreadable or has the wrong contents.

    Check the file the line names; a signed model directory that changed after signing
    names the changed files: sign it again (`smpc model sign`)."""

    code = "artifact"


class ConversionError(SmpcError):
    """A PyTorch model cannot be turned into a program on shares.

    The line names the layer and op; change the model there, or pack it with the
    shapes it will be run with (`smpc model pack`)."""

    code = "conversion"


class UnsupportedOpError(ConversionError):
    """The model uses an operation that has no secret-shared implementation.

    Replace the named op in the model (the models page lists what is supported)."""

    code = "unsupported-op"


class PartyError(SmpcError):
    """A party process failed, or the run as a whole did not finish.

    The root cause (the earliest failure) comes first, then the others, and where the
    logs are: read the root cause's log."""

    code = "party"


class AgreementError(PartyError):
    """The parties' (or the dealer's) settings differ: joining again cannot help.

    Give every party the same config and the same program folder (the line names the
    setting and each party's value)."""

    code = "agreement"


class RangeCheckError(SmpcError):
    """An in-protocol range check found a tensor outside what the protocol covers.

    Calibrate the model on representative rows (`smpc model calibrate`), or raise
    protocol.precision_bits or the approximation's range as the line says."""

    code = "range-check"


class FidelityError(SmpcError):
    """A run's outputs are further from plaintext than the config's fidelity thresholds.

    Read the report's outputs section; calibrate, or change the protocol settings it names."""

    code = "fidelity"


def no_show(missing: list[str], verb: str, timeout_s: float) -> PartyError:
    """`party bob did not join within timeouts.connect_s = 60 s` (plural when several)."""
    who = f"part{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}"
    return PartyError(f"{who} {verb} within timeouts.connect_s = {timeout_s:g} s")


def mark_failure(exc: BaseException) -> None:
    """Note when `exc` happened (once), before this party leaves the session: its peers
    fail as soon as it leaves, so the launcher needs this time to name the root cause."""
    if not hasattr(exc, "smpc_failed_at"):
        try:
            cast(Any, exc).smpc_failed_at = time.time()
        except AttributeError:  # an exception type without attributes: its time is when it is reported
            pass


def failed_at(exc: BaseException) -> float:
    """When `exc` happened: the time mark_failure noted, else now."""
    return float(getattr(exc, "smpc_failed_at", time.time()))
