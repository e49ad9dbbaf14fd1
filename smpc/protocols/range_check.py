"""One revealed bit per checked tensor: does any element leave its range?

The real deployments cannot compare with plaintext; `protocol.range_checks` makes the
parties test, on shares, the tensors the approximations read against the ranges they
cover (or the calibrated ones). Every element is compared with the bounds in one
batched comparison, the out-of-range bits are summed on shares, and only [sum > 0] is
opened: the parties learn one bit per tensor, never which element or by how much (a
standard comparison-and-open, as in the range proofs of MPC frameworks; the count
itself is never revealed).
"""

from __future__ import annotations

import math
from typing import Any

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
import crypten

from smpc.protocols.approx import less_than


def out_of_range(x: Any, low: float, high: float, absolute: bool = False) -> bool:
    """True when some element of the secret `x` (or of |x| with `absolute`) is below `low`
    or above `high` (the bounds themselves are inside); every party gets the same bit."""
    unit = 2.0**-crypten.cfg.encoder.precision_bits  # x <= t is x < t + one unit on the grid
    # per element, out = constant + sum_k sign_k * [x < t_k]
    if absolute:
        # |x| > high: x < -high, or not x < high + unit; |x| < low: -low < x < low
        pairs = [(-high, 1), (high + unit, -1)] + ([(low, 1), (-low + unit, -1)] if low > 0 else [])
        constant = 1
    else:
        pairs = [(low, 1)] if math.isfinite(low) else []
        constant = 0
        if math.isfinite(high):
            pairs.append((high + unit, -1))
            constant = 1
    pairs = [(t, s) for t, s in pairs if math.isfinite(t)]
    if not pairs:
        return False
    bits = less_than(x, [t for t, _ in pairs])  # one batched comparison, 0/1 at scale 1
    count: Any = None  # a CrypTensor
    for k, (_, sign) in enumerate(pairs):
        term = bits[..., k] if sign > 0 else -bits[..., k]
        count = term if count is None else count + term
    total = count.sum() + constant * x.numel()
    return bool(total.gt(0).get_plain_text().item())
