"""What one party spends, per model layer and per op inside it: bytes sent, rounds,
seconds, elements, the dealer's material; and its peak memory."""

from __future__ import annotations

import contextlib
import functools
import resource
import time
from typing import Any, TypeVar
from collections.abc import Callable, Iterator

F = TypeVar("F", bound=Callable[..., Any])

# pieces that contain nothing worth splitting further: what runs inside one is its own
LEAF_PIECES = frozenset({"products", "comparisons", "truncations", "range checks"})


class Piece:
    """What a piece of work reports when it ends: how many values it produced."""

    __slots__ = ("elements",)

    def __init__(self) -> None:
        self.elements = 0


class LayerMeter:
    """Attributes this party's communication and time to rows of (layer, op) as the
    work happens. `charge(label, op)` books everything since the previous charge to the
    layer `label`: to `op` itself, and to `op: piece` for what ran inside a `piece`
    (products, comparisons, truncations and the approximations' steps, nested as
    `softmax: reciprocal: products`). Totals add up over batches, and all rows together
    add up to the party's whole traffic since the session began."""

    def __init__(self) -> None:
        # (layer, op) -> [bytes, rounds, seconds, elements, key bytes], in first-use order
        self._rows: dict[tuple[str, str], list[float]] = {}
        self._pending: dict[str, list[float]] = {}  # the same, by piece path, since the last charge
        self._path: list[str] = []
        self._bytes, self._rounds, self._time = 0, 0, time.perf_counter()

    def _mark(self) -> list[float]:
        # book the spend since the last mark to the open piece; return its pending row
        import crypten.communicator as comm

        stats = comm.get().get_communication_stats()  # smpc.session.communication_stats's source
        sent, rounds, now = int(stats["bytes"]), int(stats["rounds"]), time.perf_counter()
        row = self._pending.setdefault(": ".join(self._path), [0, 0, 0.0, 0, 0])
        row[0] += sent - self._bytes
        row[1] += rounds - self._rounds
        row[2] += now - self._time
        self._bytes, self._rounds, self._time = sent, rounds, now
        return row

    @contextlib.contextmanager
    def piece(self, name: str) -> Iterator[Piece]:
        """Book the block to the piece `name` inside the open op (or piece); the caller
        sets the yielded Piece's `elements`. Inside a leaf piece, or inside a piece of
        the same name, the block stays with the open one."""
        piece = Piece()
        if self._path and (self._path[-1] in LEAF_PIECES or self._path[-1] == name):
            yield piece
            return
        self._mark()
        self._path.append(name)
        try:
            yield piece
        finally:
            self._mark()[3] += piece.elements
            self._path.pop()

    def material(self, key_bytes: int) -> None:
        """Book `key_bytes` of the dealer's material, read now, to the open piece."""
        self._pending.setdefault(": ".join(self._path), [0, 0, 0.0, 0, 0])[4] += key_bytes

    def charge(self, label: str, op: str, elements: int = 0) -> None:
        """Book everything since the last charge to layer `label`: to `op` (which produced
        `elements` values) and to `op: piece` for each piece that ran."""
        self._mark()
        self._pending.setdefault("", [0, 0, 0.0, 0, 0])[3] += elements
        for path, spent in self._pending.items():
            row = self._rows.setdefault((label, f"{op}: {path}" if path else op), [0, 0, 0.0, 0, 0])
            for i, value in enumerate(spent):
                row[i] += value
        self._pending.clear()

    def skip(self) -> None:
        """Drop everything since the last charge from the rows: the two-party offline
        phase, reported apart from the session's traffic (offline_bytes, offline_rounds)."""
        self._mark()
        self._pending.clear()

    def layers(self) -> list[dict[str, Any]]:
        """[{layer, op, elements, bytes_sent, rounds, seconds, key_bytes}] in the order
        the rows were first used."""
        return [
            {
                "layer": label,
                "op": op,
                "elements": int(n),
                "bytes_sent": int(b),
                "rounds": int(r),
                "seconds": round(s, 4),
                "key_bytes": int(k),
            }
            for (label, op), (b, r, s, n, k) in self._rows.items()
        ]


# The meters of this process's runtime while it is in a session (one party per process;
# smpc.runtime.Runtime.joined activates them): CrypTen's patched products, smpc's
# protocols and the dealer's provider book to them, since none of them is handed a runtime.
_active: LayerMeter | None = None
_protocols: ProtocolMeter | None = None


def activate(layers: LayerMeter | None, protocols: ProtocolMeter | None = None) -> None:
    """Make `layers` the meter that pieces and the dealer's material are booked to, and
    `protocols` the one comparisons, truncations and FSS keys are (None: neither)."""
    global _active, _protocols
    _active, _protocols = layers, protocols


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """No meter inside the block: a party's own shape-only trace (randomness: two-party)
    runs the program with no traffic to book."""
    global _active, _protocols
    saved = _active, _protocols
    _active, _protocols = None, None
    try:
        yield
    finally:
        _active, _protocols = saved


def piece(name: str) -> contextlib.AbstractContextManager[Piece]:
    """The active meter's `piece(name)`; a no-op outside a metered session (the dealer's
    trace, plaintext runs)."""
    return _active.piece(name) if _active is not None else contextlib.nullcontext(Piece())


def material(key_bytes: int) -> None:
    """Book the dealer's material to the active meter's open piece."""
    if _active is not None:
        _active.material(key_bytes)


def step(name: str) -> Callable[[F], F]:
    """Decorate an approximation's step: its cost is the piece `name`, and its elements
    those of its result."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def metered(*args: Any, **kwargs: Any) -> Any:
            with piece(name) as p:
                result = function(*args, **kwargs)
                p.elements = numel(result)
            return result

        return metered  # type: ignore[return-value]

    return decorate


def numel(value: Any) -> int:
    """The elements of a tensor, a CrypTensor or a tuple/list of them."""
    if isinstance(value, (tuple, list)):
        return sum(numel(v) for v in value)
    count = getattr(value, "numel", None)
    return int(count()) if callable(count) else 0


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
        rows = [self.gates.setdefault(kind, [0, 0])]
        if width is not None:
            rows.append(self.widths.setdefault(width, [0, 0]))
        for row in rows:
            row[0] += elements
            row[1] += key_bytes

    @contextlib.contextmanager
    def spent(self, label: str, elements: int = 0) -> Iterator[None]:
        """Book the bytes and rounds of the block to `label` (nothing outside a session),
        and to the piece `label` of the active LayerMeter, with `elements` compared or
        truncated."""
        import crypten.communicator as comm

        communicator: Any = comm.get() if comm.is_initialized() else None
        counting = self._depth == 0 and hasattr(communicator, "get_communication_stats")
        before: Any = communicator.get_communication_stats() if counting else None
        self._depth += 1
        try:
            with piece(label) as p:
                p.elements = elements
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
            f"{label}_{what}": row[i]
            for label, row in self.totals.items()
            for i, what in enumerate(("bytes", "rounds"))
        }
        if self.gates:
            compared = sum(row[0] for kind, row in self.gates.items() if kind != "trunc")
            out["key_bytes"] = sum(row[1] for row in self.gates.values())
            out["gates"] = {kind: row[0] for kind, row in self.gates.items()}
            compared_bytes = sum(row[1] for kind, row in self.gates.items() if kind != "trunc")
            out["key_bytes_per_comparison"] = round(compared_bytes / compared, 1) if compared else None
        if self.widths:
            out["comparison_widths"] = {
                str(bits): {
                    "comparisons": n,
                    "key_bytes": b,
                    "key_bytes_per_comparison": round(b / n, 1) if n else None,
                }
                for bits, (n, b) in sorted(self.widths.items())
            }
        return out


def protocols() -> ProtocolMeter:
    """The active ProtocolMeter; outside a session (the dealer's trace, plaintext runs),
    one that nobody reads."""
    return _protocols if _protocols is not None else _UNREAD


_UNREAD = ProtocolMeter()


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
