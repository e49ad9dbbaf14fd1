"""What one party spends, per model layer: bytes sent, rounds, seconds; and its peak memory."""

from __future__ import annotations

import resource
import time
from typing import Any

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


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
