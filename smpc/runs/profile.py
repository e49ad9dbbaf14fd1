"""A party's cost profile: its (layer, op) rows (`parties.<name>.layers` of a report)
as a table, largest first, and the same rows added up per layer or per kind of work."""

from __future__ import annotations

from typing import Any

MIB = 2**20
# the pieces every op's cost splits into (smpc.meter.LEAF_PIECES), last in an op's name
KINDS = ("products", "comparisons", "truncations", "range checks")


def by_layer(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows added up per layer, in the order the layers first ran."""
    layers: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = layers.setdefault(row["layer"], {"layer": row["layer"], "bytes_sent": 0, "rounds": 0, "seconds": 0.0})
        for key in ("bytes_sent", "rounds", "seconds"):
            total[key] += row[key]
    return list(layers.values())


def kind(op: str) -> str:
    """What work a row is: its last piece (products, comparisons, truncations, range
    checks), or "other" (openings, sharing, local work, the rest of an op)."""
    last = op.rsplit(": ", 1)[-1]
    return last if last in KINDS else "other"


def table(rows: list[dict[str, Any]], party: str, top: int = 30) -> str:
    """The profile of `party` as text: its `top` largest rows by bytes sent (then
    seconds), a line for the rest, the total, and the totals per kind of work."""
    total_bytes = sum(r["bytes_sent"] for r in rows)
    total_rounds = sum(r["rounds"] for r in rows)
    total_s = sum(r["seconds"] for r in rows)
    ordered = sorted(rows, key=lambda r: (-r["bytes_sent"], -r["seconds"]))
    width = max([len(r["layer"]) for r in ordered[:top]] + [5])
    op_width = max([len(r["op"]) for r in ordered[:top]] + [2])
    head = (
        f"{'layer':<{width}}  {'op':<{op_width}}  {'elements':>11}  {'MiB':>9}  {'share':>6}  {'rounds':>6}"
        f"  {'seconds':>8}  {'key MiB':>8}"
    )

    def line(layer: str, op: str, elements: str, sent: int, rounds: int, seconds: float, key: str) -> str:
        share = f"{100 * sent / total_bytes:.1f}%" if total_bytes else "-"
        return (
            f"{layer:<{width}}  {op:<{op_width}}  {elements:>11}  {sent / MIB:>9.3f}  {share:>6}  {rounds:>6}"
            f"  {seconds:>8.3f}  {key:>8}"
        )

    lines = [
        f"cost profile of party {party} over every batch, largest first ({len(rows)} rows; all of them in"
        f" a report's parties.{party}.layers)",
        head,
        "-" * len(head),
    ]
    for r in ordered[:top]:
        lines.append(
            line(
                r["layer"],
                r["op"],
                f"{r['elements']:,}",
                r["bytes_sent"],
                r["rounds"],
                r["seconds"],
                f"{r.get('key_bytes', 0) / MIB:.3f}",
            )
        )
    rest = ordered[top:]
    if rest:
        lines.append(
            line(
                f"({len(rest)} more rows)",
                "",
                "",
                sum(r["bytes_sent"] for r in rest),
                sum(r["rounds"] for r in rest),
                sum(r["seconds"] for r in rest),
                "",
            )
        )
    lines.append("-" * len(head))
    lines.append(
        line(
            "total", "", "", total_bytes, total_rounds, total_s, f"{sum(r.get('key_bytes', 0) for r in rows) / MIB:.3f}"
        )
    )
    kinds: dict[str, list[float]] = {}
    for r in rows:
        spent = kinds.setdefault(kind(r["op"]), [0, 0, 0.0])
        spent[0] += r["bytes_sent"]
        spent[1] += r["rounds"]
        spent[2] += r["seconds"]
    lines.append(
        "by kind of work: "
        + "; ".join(
            f"{name} {b / MIB:.2f} MiB, {r} rounds, {s:.2f} s"
            for name, (b, r, s) in sorted(kinds.items(), key=lambda kv: -kv[1][0])
        )
    )
    return "\n".join(lines)


def busiest(parties: dict[str, dict[str, Any]]) -> str:
    """The party that sent the most bytes (the profile shown when one is printed)."""
    return max(parties, key=lambda name: parties[name]["bytes_sent"])
