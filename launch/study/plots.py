"""A study's PNG plots, drawn from its records: online time per cell always; time
against batch size and against party count, error against precision bits, when the
study varies them; bytes per layer for each model."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any
from collections.abc import Callable

from launch.study.formatting import MIB, describe, varying
from smpc.runs.profile import by_layer


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _log_ticks(axis: Any, values: list[float]) -> None:
    # plain numbers (30, not 3x10^1) on a log axis; when the values span less than a
    # decade, matplotlib labels only minor ticks, so those get plain numbers too
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    axis.set_major_formatter(plain)
    positive = [v for v in values if v > 0]
    narrow = bool(positive) and max(positive) < 10 * min(positive)
    axis.set_minor_formatter(plain if narrow else NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def _online_per_cell(ok: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()
    keys = varying(ok)
    labels = [f"{r['cell']}: {describe(r, keys)}" for r in ok]
    med = [1000 * r["online_s_per_sample"]["median"] for r in ok]
    lo = [m - 1000 * r["online_s_per_sample"]["min"] for m, r in zip(med, ok)]
    hi = [1000 * r["online_s_per_sample"]["max"] - m for m, r in zip(med, ok)]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(ok) + 1.4), layout="constrained")
    ax.barh(range(len(ok)), med, xerr=[lo, hi], color="tab:blue", capsize=3)
    ax.set_yticks(range(len(ok)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("online time per sample, ms (median, min-max)")
    ax.set_title("Online time per cell")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / "online_time.png")


Span = tuple[float, float, float]  # median, min, max over the measured runs


def _span(stat: dict[str, float], scale: float = 1.0, floor: float = 0.0) -> Span:
    return tuple(max(scale * stat[k], floor) for k in ("median", "min", "max"))  # type: ignore[return-value]


def _against(
    ok: list[dict[str, Any]],
    axis: str,
    panels: list[tuple[str, Callable[[dict[str, Any]], Span], bool]],
    xlabel: str,
    path: Path,
) -> Path:
    """One line per combination of the other varying settings, `axis` on x; the median
    of the measured runs with their min-max as error bars."""
    plt = _pyplot()
    others = [k for k in varying(ok) if k != axis]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[describe(r, others)].append(r)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, layout="constrained")
    xs = sorted({r["settings"][axis] for r in ok})
    for ax, (ylabel, value, log) in zip(axes[0], panels):
        for label, rows in groups.items():
            rows = sorted(rows, key=lambda r: r["settings"][axis])
            spans = [value(r) for r in rows]
            ax.errorbar(
                [r["settings"][axis] for r in rows],
                [m for m, _, _ in spans],
                yerr=[[m - lo for m, lo, _ in spans], [hi - m for m, _, hi in spans]],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if axis == "batch_size":  # batch sizes usually double
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        if log:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, [v for r in ok for v in value(r)])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def _bytes_per_layer(ok: list[dict[str, Any]], out: Path) -> Path | None:
    plt = _pyplot()
    firsts: dict[str, dict[str, Any]] = {}
    for r in ok:
        firsts.setdefault(r["settings"]["model"], r)
    if not firsts:
        return None
    height = sum(0.22 * len(by_layer(next(iter(r["layers"].values())))) + 1.3 for r in firsts.values())
    fig, axes = plt.subplots(len(firsts), 1, figsize=(8, height), squeeze=False, layout="constrained")
    for ax, (model, r) in zip(axes[:, 0], firsts.items()):
        party, rows = next(iter(r["layers"].items()))
        layers = by_layer(rows)
        ax.barh(range(len(layers)), [layer["bytes_sent"] / MIB for layer in layers], color="tab:orange")
        ax.set_yticks(range(len(layers)), [layer["layer"] for layer in layers], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("MiB sent")
        ax.set_title(f"{model}: bytes per layer (cell {r['cell']}, party {party})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, out / "bytes_per_layer.png")


def write_plots(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Draw every plot the study's measured cells allow; returns the files written."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return []
    written = [_online_per_cell(ok, out)]

    def spread(axis: str) -> bool:
        return len({r["settings"][axis] for r in ok}) > 1

    def traffic(r: dict[str, Any]) -> Span:
        most = max(p["bytes_sent"] for p in r["parties"].values()) / MIB / r["samples"]
        return most, most, most

    time_and_traffic = [
        ("online ms per sample", lambda r: _span(r["online_s_per_sample"], 1000), True),
        ("MiB sent per sample (largest party)", traffic, True),
    ]
    if spread("batch_size"):
        written.append(_against(ok, "batch_size", time_and_traffic, "batch size", out / "time_vs_batch.png"))
    if spread("parties"):
        written.append(_against(ok, "parties", time_and_traffic, "parties", out / "time_vs_parties.png"))
    if spread("precision_bits"):
        written.append(
            _against(
                ok,
                "precision_bits",
                [
                    ("max |error| vs plain in a run", lambda r: _span(r["max_abs_error"], floor=1e-9), True),
                    ("top-1 agreement, %", lambda r: _span(r["agreement"], 100), False),
                ],
                "precision bits",
                out / "error_vs_precision.png",
            )
        )
    if spread("comparisons"):
        written.append(_by_protocol(ok, out / "comparisons.png"))
    layers = _bytes_per_layer(ok, out)
    if layers is not None:
        written.append(layers)
    return written


def _by_protocol(ok: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars, one group per cell of the other settings, one bar per comparison
    protocol: MiB sent per sample, rounds per batch and online time per sample."""
    plt = _pyplot()
    others = [k for k in varying(ok) if k != "comparisons"]
    groups = sorted({describe(r, others) for r in ok}, key=[describe(r, others) for r in ok].index)
    modes = sorted({r["settings"]["comparisons"] for r in ok})
    panels = [
        (
            "MiB sent per sample (largest party)",
            lambda r: max(p["bytes_sent"] for p in r["parties"].values()) / MIB / r["samples"],
        ),
        ("rounds per batch (largest party)", lambda r: max(p["rounds"] for p in r["parties"].values()) / r["batches"]),
        ("online ms per sample", lambda r: 1000 * r["online_s_per_sample"]["median"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, layout="constrained")
    width = 0.8 / len(modes)
    for ax, (ylabel, value) in zip(axes[0], panels):
        for j, mode in enumerate(modes):
            cells = {describe(r, others): r for r in ok if r["settings"]["comparisons"] == mode}
            xs = [i + (j - (len(modes) - 1) / 2) * width for i, g in enumerate(groups) if g in cells]
            ax.bar(xs, [value(cells[g]) for g in groups if g in cells], width, label=mode)
        ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, [value(r) for r in ok])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(title="comparisons", fontsize=8)
    return _save(fig, path)
