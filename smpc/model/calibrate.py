"""Calibration: the ranges a model's approximated operations really see, measured once by
the model owner on sample inputs, and the checks that use them.

`observe` runs the program in plain PyTorch on the owner's weights and records, for every
approximated operation, the range of the input its approximation depends on (the
divisor's magnitude for a reciprocal, the input for exp, square roots and log, the input
of GELU, softmax and normalizations, whose size decides whether fixed point wraps), and
the largest magnitude any operation produces. `calibration.json` beside the weights holds
them (signed with the directory). Before anything is computed, `check` refuses settings
that do not cover every range with the calibration's margin, naming the operation, its
range and what would cover it; `check_bounds` gives the in-protocol range checks
(`protocol.range_checks`) their limits.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import torch

from smpc.model.program import Program, layer_label
from smpc.errors import ArtifactError, ConversionError, RangeCheckError
from smpc.model.execute import run_program
from smpc.model import ranges
from smpc.protocols.approx import NORM_FINE_BITS

FILE = "calibration.json"
FORMAT = "smpc-calibration"
VERSION = 1
DEFAULT_MARGIN = 2.0

aten = torch.ops.aten
# op -> (what is measured, which argument): "magnitude" ops must stay inside the ring's
# safe range; the others inside what their approximation covers (ranges.COVERED)
MEASURED: dict[Any, tuple[str, int]] = {
    aten.exp.default: ("input", 0),
    aten.reciprocal.default: ("|input|", 0),
    aten.div.Tensor: ("|divisor|", 1),
    aten.rsqrt.default: ("input", 0),
    aten.sqrt.default: ("input", 0),
    aten.log.default: ("input", 0),
    aten.gelu.default: ("magnitude", 0),
    aten.silu.default: ("magnitude", 0),
    aten.tanh.default: ("magnitude", 0),
    aten.sigmoid.default: ("magnitude", 0),
    aten.softmax.int: ("magnitude", 0),
    aten._softmax.default: ("magnitude", 0),
    aten.log_softmax.int: ("magnitude", 0),
    aten.layer_norm.default: ("magnitude", 0),
    aten.rms_norm.default: ("magnitude", 0),
}
# ops that are exact (no approximation to cover) but compare their input: with `fss`, a
# calibrated magnitude lets their comparisons run narrower than the ring (ComparisonWidths).
# A calibration measures them too; one written before they were measured has no entry for
# them, and then they keep the ring's width (and no range check)
COMPARED: dict[Any, tuple[str, int]] = {
    aten.relu.default: ("magnitude", 0),
    aten.max_pool2d.default: ("magnitude", 0),
}
_READ = MEASURED | COMPARED  # the tensor each calibrated op reads


@dataclass(frozen=True)
class OpRange:
    """What one operation saw: `low`..`high` of its `quantity` (see MEASURED)."""

    node: str
    layer: str
    op: str
    quantity: str
    low: float
    high: float


@dataclass(frozen=True)
class Calibration:
    """The measured ranges of a program on `rows` sample rows, to be covered with `margin`
    (a factor on every value: e^x * margin for exp, |x| * margin and |x| / margin
    elsewhere)."""

    architecture: str  # what was calibrated (the model directory's architecture)
    rows: int
    margin: float
    ops: tuple[OpRange, ...]
    largest: OpRange  # the operation with the largest output magnitude


def _op(target: Any) -> str:
    # aten.div.Tensor -> "div"
    return str(target).split(".")[-2]


_OPS = {_op(t) for t in _READ}
_COMPARED_OPS = {_op(t) for t in COMPARED}
_QUANTITIES = {q for q, _ in _READ.values()}
# what each range-limited approximation covers, by the name stored in calibration.json
_COVERED = {_op(t): bounds for t, bounds in ranges.COVERED.items()} | {"div": ranges.COVERED[aten.reciprocal.default]}


def observe(
    program: Program, batches: Iterable[dict[str, torch.Tensor]], margin: float = DEFAULT_MARGIN, architecture: str = ""
) -> Calibration:
    """Run `program` (with the owner's weights) on plaintext `batches` (inputs as shared:
    one-hot ids, 0/1 masks) and record the ranges.

    Args:
        program: the program with the owner's real weights in `program.secret`.
        batches: feeds for run_program, each a full batch.
        margin: the factor by which every range must be covered (>= 1).
        architecture: what was calibrated, as the model directory names it.
    """
    if not (1.0 <= margin < 1e6):
        raise ConversionError(f"--margin: expected a factor from 1 to 1e6, got {margin:g}")
    seen: dict[str, list[Any]] = {}
    largest_magnitude = 0.0
    largest_node: torch.fx.Node | None = None
    rows = 0

    def record(node: torch.fx.Node, args: tuple[Any, ...], result: Any) -> None:
        nonlocal largest_magnitude, largest_node
        measured = _READ.get(node.target)
        if measured is not None and len(args) > measured[1] and isinstance(args[measured[1]], torch.Tensor):
            x = args[measured[1]].detach().double()
            if x.numel():
                if measured[0].startswith("|"):
                    x = x.abs()
                low, high = float(x.min()), float(x.max())
                entry = seen.setdefault(node.name, [layer_label(node), _op(node.target), measured[0], low, high])
                entry[3], entry[4] = min(entry[3], low), max(entry[4], high)
        if isinstance(result, torch.Tensor) and result.is_floating_point() and result.numel():
            magnitude = float(result.detach().abs().max())
            if magnitude > largest_magnitude:
                largest_magnitude, largest_node = magnitude, node

    with torch.no_grad():
        for feeds in batches:
            rows += next(iter(feeds.values())).shape[0]
            run_program(program, program.secret, feeds, observe=record)
    node = largest_node
    top = OpRange(
        node.name if node is not None else "",
        layer_label(node) if node is not None else "",
        "output",
        "magnitude",
        -largest_magnitude,
        largest_magnitude,
    )
    ops = tuple(OpRange(name, *values) for name, values in seen.items())
    return Calibration(architecture, rows, float(margin), ops, top)


def _widened(entry: OpRange, margin: float) -> tuple[float, float]:
    # the range to cover: the measured one stretched by the margin on the value scale
    if entry.op == "exp":
        return entry.low - math.log(margin), entry.high + math.log(margin)
    if entry.quantity == "magnitude":
        reach = max(abs(entry.low), abs(entry.high)) * margin
        return -reach, reach
    return entry.low / margin, entry.high * margin


def _covered(op: str, quantity: str, precision_bits: int) -> tuple[float, float]:
    if quantity == "magnitude":
        safe = ranges.safe_magnitude(precision_bits)
        return -safe, safe
    return _COVERED[op]


def _covering_precision(calibration: Calibration, below: int) -> int | None:
    # the most precise setting under `below` whose ring holds every calibrated magnitude
    need = max(
        max(abs(e.low), abs(e.high)) for e in list(calibration.ops) + [calibration.largest] if e.quantity == "magnitude"
    )
    for bits in range(below - 1, 7, -1):
        if need * calibration.margin <= ranges.safe_magnitude(bits):
            return bits
    return None


def check(calibration: Calibration, program: Program, precision_bits: int, where: str) -> None:
    """ConversionError naming the first operation whose calibrated range (with the margin)
    the protocol at `precision_bits` does not cover, and what would cover it."""
    # a calibration from before COMPARED ops were measured has none of them: it still fits
    read = _READ if any(e.op in _COMPARED_OPS for e in calibration.ops) else MEASURED
    measured = {n.name: _op(n.target) for n in program.graph.nodes if n.op == "call_function" and n.target in read}
    if measured != {e.node: e.op for e in calibration.ops}:
        raise ConversionError(
            f"{where}: calibrated for another architecture than this model: run `smpc model calibrate` again"
        )
    entries = list(calibration.ops) + [calibration.largest]
    for entry in entries:
        low, high = _widened(entry, calibration.margin)
        covered_low, covered_high = _covered(entry.op, entry.quantity, precision_bits)
        if low >= covered_low and high <= covered_high:
            continue
        what = f"{entry.layer} ({entry.op}): calibrated {entry.quantity} [{entry.low:.3g}, {entry.high:.3g}]"
        if entry.quantity == "magnitude":
            bits = _covering_precision(calibration, precision_bits)
            fix = (
                f"protocol.precision_bits {bits} covers every calibrated range"
                if bits is not None
                else "no precision covers it"
            )
            raise ConversionError(
                f"{where}: {what} x{calibration.margin:g} margin reaches ±{high:.3g}, beyond the "
                f"±{covered_high:.3g} that protocol.precision_bits {precision_bits} holds; {fix}"
            )
        raise ConversionError(
            f"{where}: {what} x{calibration.margin:g} margin is [{low:.3g}, {high:.3g}], beyond the "
            f"[{covered_low:.3g}, {covered_high:.3g}] its approximation covers; nothing available covers it"
        )


def check_bounds(
    program: Program, precision_bits: int, calibration: Calibration | None
) -> dict[str, tuple[str, float, float]]:
    """The in-protocol range checks: node name -> (what, low, high) for the tensor each
    approximated operation reads: the calibrated range with its margin where a
    calibration exists, else what the approximation covers (or the ring's safe range); a
    COMPARED op (ReLU, max pooling) only where calibrated (its comparisons may be narrowed)."""
    calibrated = {e.node: e for e in calibration.ops} if calibration is not None else {}
    bounds = {}
    for node in program.graph.nodes:
        measured = _READ.get(node.target) if node.op == "call_function" else None
        if measured is None or len(node.args) <= measured[1] or not isinstance(node.args[measured[1]], torch.fx.Node):
            continue
        quantity = measured[0]
        entry = calibrated.get(node.name)
        if node.target in COMPARED and entry is None:
            continue
        if entry is not None and calibration is not None:  # entries come from the calibration
            low, high = _widened(entry, calibration.margin)
        else:
            low, high = _covered(_op(node.target), quantity, precision_bits)
        bounds[node.name] = (quantity, low, high)
    return bounds


def describe(calibration: Calibration) -> str:
    """The calibrated ranges as a table: one operation per line, whole names, then the
    largest output of any operation (the row precision_bits must hold)."""
    top = calibration.largest
    rows = [(f"{e.layer} ({e.op})", e) for e in calibration.ops]
    rows.append(
        (f"all operations: largest output ({top.layer})" if top.layer else "all operations: largest output", top)
    )
    width = max(len("operation"), *(len(label) for label, _ in rows))
    lines = [f"{'operation':<{width}} {'quantity':<10} {'low':>11} {'high':>11}"]
    for label, e in rows:
        lines.append(f"{label:<{width}} {e.quantity:<10} {e.low:>11.4g} {e.high:>11.4g}")
    return "\n".join(lines)


class RangeChecks:
    """The in-protocol checks of one program: called by run_program with each node and
    its argument values; a checked tensor out of its bounds raises RangeCheckError at every
    party at once (they all open the same bit). With `enforce` False (the dealer's dry run
    on zeros) the same operations run and nothing is raised."""

    def __init__(self, program: Program, bounds: dict[str, tuple[str, float, float]], enforce: bool = True) -> None:
        self.bounds, self.enforce = bounds, enforce
        self.labels = {n.name: f"{layer_label(n)} ({_op(n.target)})" for n in program.graph.nodes if n.name in bounds}

    def __call__(self, node: torch.fx.Node, args: tuple[Any, ...]) -> None:
        from smpc.model.ops import is_secret
        from smpc.protocols.range_check import out_of_range

        bound = self.bounds.get(node.name)
        if bound is None:
            return
        quantity, low, high = bound
        x = args[_READ[node.target][1]]
        if not is_secret(x):
            return
        if out_of_range(x, low, high, absolute=quantity.startswith("|")) and self.enforce:
            raise RangeCheckError(
                f"range check failed: {self.labels[node.name]}: {quantity} out of [{low:.3g}, {high:.3g}] "
                "(protocol.range_checks); the answer would be wrong"
            )


def range_checks(config: Any, program: Program, enforce: bool = True) -> RangeChecks | None:
    """The checks a run of `config` makes (None unless protocol.range_checks): bounds from
    the calibration in the packed program's directory, else what the protocol covers."""
    if not config.protocol.range_checks:
        return None
    calibration = load(config.model.program) if config.model.program is not None else None
    return RangeChecks(program, check_bounds(program, config.protocol.precision_bits, calibration), enforce)


# the calibrated ops whose comparisons run narrower than the ring (with `fss`), and the
# largest magnitude each compares, from the calibrated magnitude m of its input (real
# units) and the input itself: GELU, SiLU, tanh and sigmoid compare x and |x| against
# their table's points (at most 16); a softmax compares differences of its row (2m), the
# row minus its maximum against -16, and its sum (at most n) against powers of two up to
# 4n; a normalization compares its row's variance plus eps (at most (2m)^2) against
# 2^-21..2^24, both held 2^NORM_FINE_BITS times larger; ReLU compares its input (m), max
# pooling differences of its window (2m)
_NORM = 2.0**NORM_FINE_BITS


def _relu(m: float, x: Any, args: tuple[Any, ...]) -> float:
    return m


def _max_pool(m: float, x: Any, args: tuple[Any, ...]) -> float:
    return 2 * m


def _activation(m: float, x: Any, args: tuple[Any, ...]) -> float:
    return m + 16


def _softmax(m: float, x: Any, args: tuple[Any, ...]) -> float:
    size: int = x.size(args[1])
    return max(2 * m + 16, 4 * (size + 1))


def _normalization(m: float, x: Any, args: tuple[Any, ...]) -> float:
    return max(4 * m * m + 1, 2.0**24) * _NORM


_NARROWED = {
    "gelu": _activation,
    "silu": _activation,
    "tanh": _activation,
    "sigmoid": _activation,
    "softmax": _softmax,
    "_softmax": _softmax,
    "log_softmax": _softmax,
    "layer_norm": _normalization,
    "rms_norm": _normalization,
    "relu": _relu,
    "max_pool2d": _max_pool,
}
# bits above the sign bit and the compared magnitude: values may reach 4x the
# calibration's bound (with its margin) before a comparison of the op could be wrong
HEADROOM_BITS = 2


class ComparisonWidths:
    """The width of each calibrated op's comparisons (`fss`): called by run_program with a
    node and its argument values, it returns the bits the op's comparisons run on (None:
    the ring's 64). A value past the width gives a wrong comparison, so only calibrated
    ops are narrowed (`bounds`: node name -> the magnitude of its input, with the
    calibration's margin), with HEADROOM_BITS to spare; `protocol.range_checks` stops a
    run whose values leave the calibrated bounds before the op runs."""

    def __init__(self, bounds: dict[str, float], precision_bits: int) -> None:
        self.bounds, self.precision_bits = bounds, precision_bits

    def __call__(self, node: torch.fx.Node, args: tuple[Any, ...]) -> int | None:
        reach = self.bounds.get(node.name)
        if reach is None or not args:
            return None
        compared = _NARROWED[_op(node.target)](reach, args[0], args)
        bits = math.ceil(math.log2(compared * 2**self.precision_bits)) + 1 + HEADROOM_BITS
        return bits if bits < 64 else None


def comparison_widths(config: Any, program: Program) -> ComparisonWidths | None:
    """The narrowed comparisons of a run of `config` (None unless comparisons are `fss`
    and the packed program's directory holds a calibration)."""
    if config.protocol.comparisons != "fss" or config.model.program is None:
        return None
    calibration = load(config.model.program)
    if calibration is None:
        return None
    names = {n.name for n in program.graph.nodes}
    bounds = {
        e.node: _widened(e, calibration.margin)[1]
        for e in calibration.ops
        if e.op in _NARROWED and e.quantity == "magnitude" and e.node in names
    }
    return ComparisonWidths(bounds, config.protocol.precision_bits) if bounds else None


def _as_json(calibration: Calibration) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "architecture": calibration.architecture,
        "rows": calibration.rows,
        "margin": calibration.margin,
        "largest": asdict(calibration.largest),
        "ops": [asdict(e) for e in calibration.ops],
    }


def save(calibration: Calibration, directory: Path) -> Path:
    """Write `calibration.json` into the model directory (atomically)."""
    from smpc.runfiles import write_json

    path = Path(directory) / FILE
    write_json(path, _as_json(calibration))
    return path


def load(directory: Path) -> Calibration | None:
    """The calibration in a model directory, None when there is none; ArtifactError
    naming the file when it is malformed."""
    path = Path(directory) / FILE
    if not Path(directory).is_dir() or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"expected format {FORMAT} version {VERSION}")

        def entry(d: dict[str, Any]) -> OpRange:
            return OpRange(
                str(d["node"]), str(d["layer"]), str(d["op"]), str(d["quantity"]), float(d["low"]), float(d["high"])
            )

        margin = float(doc["margin"])
        ops = tuple(entry(e) for e in doc["ops"])
        if not (1.0 <= margin < 1e6) or not all(math.isfinite(e.low) and math.isfinite(e.high) for e in ops):
            raise ValueError("margin must be 1..1e6 and every range finite")
        for e in ops:
            if e.op not in _OPS or e.quantity not in _QUANTITIES:
                raise ValueError(f"unknown operation {e.op!r} or quantity {e.quantity!r}")
        largest = entry(doc["largest"])
        if largest.quantity != "magnitude" or not math.isfinite(largest.high):
            raise ValueError("largest: expected a finite magnitude")
        return Calibration(str(doc["architecture"]), int(doc["rows"]), margin, ops, largest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: not a calibration file: {exc}") from None
