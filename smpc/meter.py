"""What one party spends, per model layer: bytes sent, rounds, seconds; and its peak memory."""

from __future__ import annotations

import contextlib
import resource
import time
from typing import Any, Iterator

from smpc import session


class LayerMeter:
    """Attributes this party's communication and time to labels (model layers, input
    sharing, output reveal) as the work happens: each `charge(label)` books everything
    since the previous charge to `label`. Totals per label add up over batches, and
    all labels together add up to the party's whole traffic since the session began."""

    def __init__(self) -> None:
        self._layers: dict[str, list[float]] = {}  # label -> [bytes, rounds, seconds], first use order
        self._bytes, self._rounds, self._time = 0, 0, time.perf_counter()

    def charge(self, label: str) -> None:
        """Book the bytes, rounds and seconds since the last charge to `label`."""
        stats = session.communication_stats()
        now = time.perf_counter()
        row = self._layers.setdefault(label, [0, 0, 0.0])
        row[0] += stats["bytes_sent"] - self._bytes
        row[1] += stats["rounds"] - self._rounds
        row[2] += now - self._time
        self._bytes, self._rounds, self._time = stats["bytes_sent"], stats["rounds"], now

    def layers(self) -> list[dict[str, Any]]:
        """[{layer, bytes_sent, rounds, seconds}] in the order the labels were first used."""
        return [
            {"layer": label, "bytes_sent": int(b), "rounds": int(r), "seconds": round(s, 4)}
            for label, (b, r, s) in self._layers.items()
        ]


class ProtocolMeter:
    """Bytes and rounds this party spent inside comparisons (CrypTen's circuits or the
    FSS gates) and inside FSS truncations, apart from everything else. Nested uses (a
    maximum made of ReLUs) count once, at the outermost."""

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {"comparisons": [0, 0], "truncations": [0, 0]}
        self.gates: dict[str, list[int]] = {}  # FSS gate kind -> [elements, key bytes from the dealer]
        self.widths: dict[int, list[int]] = {}  # comparison width in bits -> [elements, key bytes]
        self._depth = 0

    def keys(self, kind: str, elements: int, key_bytes: int, width: int | None = None) -> None:
        """Book one FSS request: its elements, the key bytes the dealer sent for it and,
        for a comparison, the width it ran on."""
        for table, key in ((self.gates, kind), (self.widths, width)):
            if key is not None:
                row = table.setdefault(key, [0, 0])
                row[0] += elements
                row[1] += key_bytes

    @contextlib.contextmanager
    def spent(self, label: str) -> Iterator[None]:
        """Book the bytes and rounds of the block to `label` (nothing outside a session)."""
        import crypten.communicator as comm

        communicator = comm.get() if comm.is_initialized() else None
        counting = self._depth == 0 and hasattr(communicator, "get_communication_stats")
        before = communicator.get_communication_stats() if counting else None
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if counting:
                after = communicator.get_communication_stats()
                row = self.totals[label]
                row[0] += int(after["bytes"] - before["bytes"])
                row[1] += int(after["rounds"] - before["rounds"])

    def record(self) -> dict[str, Any]:
        """comparisons_bytes/_rounds, truncations_bytes/_rounds, and with FSS the dealer's
        key bytes (key_bytes), per comparison element (key_bytes_per_comparison) and by
        the comparisons' width in bits (comparison_widths: {bits: {comparisons,
        key_bytes, key_bytes_per_comparison}}; this party's, 0 key bytes where the
        dealer sent it none)."""
        out: dict[str, Any] = {
            f"{label}_{what}": row[i] for label, row in self.totals.items() for i, what in enumerate(("bytes", "rounds"))
        }
        if self.gates:
            compared = sum(row[0] for kind, row in self.gates.items() if kind != "trunc")
            out["key_bytes"] = sum(row[1] for row in self.gates.values())
            out["gates"] = {kind: row[0] for kind, row in self.gates.items()}
            compared_bytes = sum(row[1] for kind, row in self.gates.items() if kind != "trunc")
            out["key_bytes_per_comparison"] = round(compared_bytes / compared, 1) if compared else None
        if self.widths:
            out["comparison_widths"] = {
                str(bits): {"comparisons": n, "key_bytes": b, "key_bytes_per_comparison": round(b / n, 1) if n else None}
                for bits, (n, b) in sorted(self.widths.items())
            }
        return out


protocol_meter = ProtocolMeter()


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
