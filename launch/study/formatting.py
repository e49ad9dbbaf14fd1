"""How a study's settings and numbers are printed: the report's tables, the plots'
labels and the progress line share these (the tests read the report back with the same
precision)."""

from __future__ import annotations

from typing import Any

SETTINGS = ("model", "parties", "randomness", "comparisons", "transport", "precision_bits", "batch_size", "functions")
HEADINGS = {
    "model": "model",
    "parties": "parties",
    "randomness": "randomness",
    "comparisons": "comparisons",
    "transport": "transport",
    "precision_bits": "bits",
    "batch_size": "batch",
    "functions": "approximations",
}
MIB = 2**20


def varying(records: list[dict[str, Any]]) -> list[str]:
    """The settings that differ between cells (the model is always shown)."""
    return [k for k in SETTINGS if k == "model" or len({str(r["settings"][k]) for r in records}) > 1]


def describe(record: dict[str, Any], keys: list[str]) -> str:
    """A cell named by the settings in `keys`, e.g. 'lenet5 parties=3 dealer'."""
    s = record["settings"]
    parts = [
        str(s[k]) if k in ("model", "randomness", "comparisons", "transport") else f"{HEADINGS[k]}={s[k]}" for k in keys
    ]
    return " ".join(parts)


def f_seconds(v: float) -> str:
    return f"{v:.3f}"


def f_ms(v: float) -> str:
    return f"{1000 * v:.2f}"


def f_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def f_mib(v: float) -> str:
    return f"{v / MIB:.2f}"


def f_error(v: float) -> str:
    return f"{v:.2e}"


def f_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"
