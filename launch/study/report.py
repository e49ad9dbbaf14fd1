"""A study's tables, made from its records (results.jsonl) and nothing else:
results.csv, report.md, and the plots (launch.study.plots)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from launch.study import plots
from launch.study.formatting import (
    HEADINGS,
    SETTINGS,
    describe,
    f_error,
    f_mib,
    f_ms,
    f_pct,
    f_ratio,
    f_seconds,
    varying,
)

CSV = "results.csv"
MARKDOWN = "report.md"
# per party and run: what it sent (in all, in comparisons, in FSS truncations), the
# dealer's FSS key bytes it received, and what it sent in a two-party offline phase
PARTY_COUNTS = (
    "bytes_sent",
    "rounds",
    "comparisons_bytes",
    "comparisons_rounds",
    "truncations_bytes",
    "truncations_rounds",
    "key_bytes",
    "offline_bytes",
    "offline_rounds",
)
STATS = (
    "online_s",
    "online_s_per_sample",
    "offline_s",
    "wall_s",
    "plain_s",
    "slowdown",
    "max_abs_error",
    "agreement",
    "accuracy_mpc",
    "accuracy_plain",
)


def read_records(out: Path) -> list[dict[str, Any]]:
    """The records of the study in `out`, in cell order."""
    lines = (out / "results.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["cell"])


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader never sees half a report


def one_line(record: dict[str, Any]) -> str:
    """What the progress display prints when a cell finishes."""
    head = f"cell {record['cell']:>3} {describe(record, list(SETTINGS))}"
    if record["status"] != "ok":
        return f"{head}: FAILED: {record['error'].splitlines()[0]}"
    online = record["online_s"]
    return (
        f"{head}: online {f_seconds(online['median'])} s [{f_seconds(online['min'])}-{f_seconds(online['max'])}],"
        f" agreement {f_pct(record['agreement']['min'])}, max err {f_error(record['max_abs_error']['max'])}"
    )


def _party_max(record: dict[str, Any], key: str) -> float:
    return max(p.get(key, 0) for p in record["parties"].values())  # older records lack the newer counts


def markdown(records: list[dict[str, Any]], title: str, description: str, plots: list[str]) -> str:
    """The report: environment, one table row per cell, failures, bytes per layer, plots."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    shown = varying(records)
    fixed = [k for k in SETTINGS if k not in shown]
    env = records[0]["env"]
    first = records[0]
    lines = [f"# Study: {title}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"{len(ok)} of {len(records)} cells measured; each cell: {first['warmup']} warm-up run(s), then"
        f" {first['repetitions']} measured runs, each a fresh launch of every party process. Times are the median"
        " of the measured runs [min-max]; agreement is the worst run, max |error| the worst run.",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} CPUs; one thread per party and for the plain model."
        f" Python {env['python']}, torch {env['torch']}, CrypTen {env['crypten']}, smpc {env['smpc']}"
        + (
            f" (commit {env['smpc_commit'][:12]}{', modified' if env['smpc_modified'] else ''})"
            if env["smpc_commit"]
            else ""
        )
        + ".",
        "",
    ]
    if fixed:
        lines += ["Same in every cell: " + ", ".join(f"{HEADINGS[k]} {first['settings'][k]}" for k in fixed) + ".", ""]
    if ok:
        heads = (
            ["cell"]
            + [HEADINGS[k] for k in shown]
            + [
                "samples",
                "online s",
                "ms/sample",
                "offline s",
                "plain ms",
                "slowdown",
                "MiB/party",
                "rounds",
                "comparison MiB",
                "comparison rounds",
                "key MiB/party",
                "dealer s/batch",
                "peak MiB",
                "max abs error",
                "agreement",
                "accuracy MPC",
                "accuracy plain",
            ]
        )
        lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for r in ok:
            online = r["online_s"]
            acc = r["accuracy_mpc"]
            acc_plain = r["accuracy_plain"]
            row = (
                [str(r["cell"])]
                + [str(r["settings"][k]) for k in shown]
                + [
                    str(r["samples"]),
                    f"{f_seconds(online['median'])} [{f_seconds(online['min'])}-{f_seconds(online['max'])}]",
                    f_ms(r["online_s_per_sample"]["median"]),
                    f_seconds(r["offline_s"]["median"]),
                    f_ms(r["plain_s"]["median"]),
                    f_ratio(r["slowdown"]["median"] if r["slowdown"] else None),
                    f_mib(_party_max(r, "bytes_sent")),
                    str(int(_party_max(r, "rounds"))),
                    f_mib(_party_max(r, "comparisons_bytes")),
                    str(int(_party_max(r, "comparisons_rounds"))),
                    f_mib(_party_max(r, "key_bytes")),
                    f_seconds(r["dealer_s_per_batch"]["median"]) if r.get("dealer_s_per_batch") else "n/a",
                    f"{max(p['peak_rss_mib']['max'] for p in r['parties'].values()):.0f}",
                    f_error(r["max_abs_error"]["max"]),
                    f_pct(r["agreement"]["min"]),
                    f_pct(acc["median"] if acc else None),
                    f_pct(acc_plain["median"] if acc_plain else None),
                ]
            )
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "MiB/party and rounds: the most any one party sent (over gloo, 8 bytes per ring element it"
            " sends; over TLS, bytes written to the sockets). Peak MiB: the largest peak resident memory of any"
            " party process. Slowdown: online time over the plain PyTorch time of the same batches. Comparison"
            " MiB and rounds: the part spent inside comparisons (CrypTen's circuits or the FSS gates). Key"
            " MiB/party: the FSS keys the dealer sent the party that received most; dealer s/batch: the dealer's"
            " time to generate one batch's material.",
            "",
        ]
    if failed:
        lines += ["## Failed cells", "", "| cell | settings | error |", "|---|---|---|"]
        for r in failed:
            error = r["error"].splitlines()[0].replace("|", "\\|")
            lines.append(f"| {r['cell']} | {describe(r, list(SETTINGS))} | {error} |")
        lines += ["", "Each failed cell's logs are in its `cells/NNN/run/` folder.", ""]
    seen_models = set()
    layer_blocks = []
    for r in ok:
        if r["settings"]["model"] in seen_models:
            continue
        seen_models.add(r["settings"]["model"])
        party, layers = next(iter(r["layers"].items()))
        total = sum(layer["bytes_sent"] for layer in layers) or 1
        top = sorted(layers, key=lambda layer: -layer["bytes_sent"])[:12]
        layer_blocks += [
            f"### {r['settings']['model']} (cell {r['cell']}, party {party}, all batches of the median run)",
            "",
            "| layer | op | MiB | share | rounds | s |",
            "|---|---|---|---|---|---|",
        ]
        layer_blocks += [
            f"| {layer['layer']} | {layer.get('op', '')} | {f_mib(layer['bytes_sent'])} |"
            f" {100 * layer['bytes_sent'] / total:.1f}% | {layer['rounds']} | {f_seconds(layer['seconds'])} |"
            for layer in top
        ]
        if len(layers) > len(top):
            layer_blocks.append(f"| ({len(layers) - len(top)} more) | | | | | |")
        layer_blocks.append("")
    if layer_blocks:
        lines += ["## Communication per layer and op", "", *layer_blocks]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def csv_text(records: list[dict[str, Any]]) -> str:
    """One row per cell: settings, status, median/min/max of every metric, per party
    bytes/rounds/peak memory, error."""
    parties: list[str] = []
    for r in records:
        parties += [n for n in r.get("parties", {}) if n not in parties]
    heads = ["cell", "status", *SETTINGS, "architecture", "trained_weights", "real_data", "samples", "batches"]
    heads += [f"{k}_{s}" for k in STATS for s in ("median", "min", "max")]
    heads += [f"{p}_{k}" for p in parties for k in (*PARTY_COUNTS, "peak_rss_mib")]
    heads += ["dealer_s_per_batch_median", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(heads)
    for r in records:
        s = r["settings"]
        row: list[Any] = [
            r["cell"],
            r["status"],
            *(s[k] for k in SETTINGS),
            s["architecture"],
            s["trained_weights"],
            s["real_data"],
            r.get("samples", ""),
            r.get("batches", ""),
        ]
        for k in STATS:
            value = r.get(k)
            row += [value[x] if value else "" for x in ("median", "min", "max")]
        for p in parties:
            got = r.get("parties", {}).get(p)
            row += (
                [got.get(k, "") for k in PARTY_COUNTS] + [got["peak_rss_mib"]["max"]]
                if got
                else [""] * (len(PARTY_COUNTS) + 1)
            )
        dealer = r.get("dealer_s_per_batch")
        row += [dealer["median"] if dealer else "", r["error"] or ""]
        writer.writerow(row)
    return buf.getvalue()


def write_all(out: Path, study: Any) -> list[Path]:
    """(Re)write results.csv, the plots and report.md in `out` from its results.jsonl."""
    records = read_records(out)
    _write_text(out / CSV, csv_text(records))
    pngs = plots.write_plots(records, out)
    _write_text(out / MARKDOWN, markdown(records, study.name, study.description, [p.name for p in pngs]))
    return [out / CSV, out / MARKDOWN, *pngs]
