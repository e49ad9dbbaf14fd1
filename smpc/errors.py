"""Typed errors. Each carries one line meant for the user; no traceback is shown for them."""

import time
from typing import Any, cast


class SmpcError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class ConfigError(SmpcError):
    """A configuration file is missing, malformed or inconsistent."""


class ArtifactError(SmpcError):
    """A model or data file is missing, unreadable or has the wrong contents."""


class ConversionError(SmpcError):
    """A PyTorch model cannot be turned into a CrypTen program."""


class UnsupportedOpError(ConversionError):
    """The model uses an operation that has no secret-shared implementation."""


class PartyError(SmpcError):
    """A party process failed, or the run as a whole did not finish."""


class AgreementError(PartyError):
    """The parties' (or the dealer's) settings differ: joining again cannot help."""


class RangeCheckError(SmpcError):
    """An in-protocol range check found a tensor outside what the protocol covers."""


class FidelityError(SmpcError):
    """A run's outputs are further from plaintext than the config's fidelity thresholds."""


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
    return getattr(exc, "smpc_failed_at", time.time())
