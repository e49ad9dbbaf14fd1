"""Which operation most likely broke a run: the ranges a plaintext run of the program
reaches, against the ranges the fixed-point ring and the approximations cover."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch._ops import OpOverload

from smpc.model.program import Program, layer_label
from smpc.model.execute import run_program

aten = torch.ops.aten


def safe_magnitude(precision_bits: int) -> float:
    """The largest magnitude a value may reach at `precision_bits`: a product held at scale
    2^(2p) in the 64-bit ring wraps in two-party truncation with probability
    |value| * 2^(2p) / 2^64, kept at or below 2^-12 per element (2^20 at 16 bits)."""
    return 2.0 ** (52 - 2 * precision_bits)


# at the default 16 bits: a product of two shares (held at scale 2^32 before truncation)
# wraps the ring with probability |value| / 2^32 per element in two-party truncation
SAFE_MAGNITUDE = safe_magnitude(16)
# the input range each approximation covers (smpc.protocols.approx)
COVERED = {
    aten.exp.default: (-math.inf, 12.0),
    aten.reciprocal.default: (2.0**-16, 2.0**24),
    aten.rsqrt.default: (4.0**-8, 4.0**12),
    aten.sqrt.default: (4.0**-8, 4.0**12),
    aten.log.default: (1e-3, 1e3),
}


def _magnitude(value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
        return float(value.abs().max())
    return 0.0


def likely_cause(program: Program, batches: list[dict[str, torch.Tensor]]) -> str:
    """A phrase naming the first op whose plaintext values leave what the protocol covers.

    Args:
        program: the program with the owner's real weights.
        batches: plaintext inputs (as shared: one-hot ids, 0/1 masks), one dict per batch.
    """
    found: list[tuple[int, str]] = []
    order = {node: i for i, node in enumerate(program.graph.nodes)}

    def observe(node: torch.fx.Node, args: tuple[Any, ...], result: Any) -> None:
        target = node.target  # COVERED holds operator overloads only
        if (
            isinstance(target, OpOverload)
            and (bounds := COVERED.get(target)) is not None
            and args
            and isinstance(args[0], torch.Tensor)
        ):
            low, high = bounds
            x = args[0].abs() if node.target is not aten.exp.default else args[0]
            if x.numel() and (float(x.min()) < low or float(x.max()) > high):
                found.append(
                    (
                        order[node],
                        f"{layer_label(node)} ({target.__name__.split('.')[0]}): inputs reach "
                        f"[{float(x.min()):.3g}, {float(x.max()):.3g}], covered [{low:.3g}, {high:.3g}]",
                    )
                )
        if _magnitude(result) > SAFE_MAGNITUDE:
            found.append(
                (
                    order[node],
                    f"{layer_label(node)}: values reach {_magnitude(result):.3g}, beyond ±{SAFE_MAGNITUDE:.3g} "
                    "where products of shares wrap the ring",
                )
            )

    with torch.no_grad():
        for feeds in batches:
            run_program(program, program.secret, feeds, observe=observe)
    if not found:
        return "no value left the covered ranges: fixed-point rounding (try a larger protocol.precision_bits)"
    return "likely " + min(found)[1]
