"""Fixed-point helpers for smpc's own protocols: exact products with public integers and
bit weights, scales brought to the common one, and the shares a client sends or gets.

CrypTen encodes a public operand with the scale of the shared one and truncates every
product again; these helpers work on the integer shares instead, where that is exact.
"""

from __future__ import annotations

import math
from typing import Any

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)


def weighted_bits(bits: Any, weights: Any, dim: int = -1) -> Any:
    """sum_k bits[..., k, ...] * weights[k] along `dim`, as a fixed-point CrypTensor, exactly.

    `bits` is a comparison result (0/1 held at scale 1, as CrypTen's `_ltz` leaves it);
    each weight is rounded to the fixed-point grid. CrypTen would encode public weights
    with the bits' scale of 1 (rounding them to integers), or re-encode the bits and
    truncate every product; scaling the integer shares by the integer weights is exact.
    """
    import crypten
    import torch
    from crypten.mpc import MPCTensor

    if bits.encoder.scale != 1:
        raise ValueError("weighted_bits expects comparison results (scale 1)")
    precision = crypten.cfg.encoder.precision_bits
    w = torch.round(torch.as_tensor(weights, dtype=torch.float64) * 2**precision).long()
    shape = [1] * bits.dim()
    shape[dim] = -1
    share = (bits.share * w.view(shape)).sum(dim)
    return MPCTensor.from_shares(share, precision=precision)


def to_fixed_point(x: Any) -> Any:
    """A comparison result (0/1 at scale 1) at the default fixed-point scale, exactly.

    CrypTen encodes a public operand with the scale of the shared one, so a scale-1 bit
    times 0.5 would silently round 0.5 to 0; values leaving smpc's own protocols are
    brought to the common scale first.
    """
    import crypten
    from crypten.encoder import FixedPointEncoder

    if x.encoder.scale == 2**crypten.cfg.encoder.precision_bits:
        return x
    out = x.clone()
    out._tensor.encode_(FixedPointEncoder())
    return out


def times_integers(x: Any, factors: Any) -> Any:
    """x * factors for public integer factors (broadcast), exactly: CrypTen's `mul` would
    encode the integers as fixed point and truncate the product again."""
    import torch

    out = x.clone()
    out._tensor.share = out._tensor.share * torch.as_tensor(factors, dtype=torch.long)
    return out


def times_unscaled(x: Any, y: Any) -> Any:
    """x * y (two secrets, elementwise) left at twice the fixed-point scale: the Beaver
    product without its truncation, for a caller that adds it to other terms at that
    scale and truncates the sum once (`.div(2 ** precision_bits)`)."""
    from crypten.mpc.primitives import beaver

    out = x.clone()
    out._tensor.share = beaver.mul(x._tensor, y._tensor).share
    return out


def scaled_divisor(factor: float) -> int | None:
    """The integer d with x * factor = (x at twice the scale) / d, when rounding 2^p /
    factor to an integer changes the result by less than one part in 2^p and d is a
    divisor every truncation takes (1 .. 2^31 - 1); None else: the product is
    truncated and then scaled, as usual."""
    import crypten

    precision = int(crypten.cfg.encoder.precision_bits)
    if not math.isfinite(factor) or factor <= 0:
        return None
    exact = float(2**precision) / factor
    divisor = round(exact)
    if not 1 <= divisor < 2**31 or abs(divisor - exact) > exact * 2.0**-precision:
        return None
    return divisor


def matmul_divided(x: Any, y: Any, divisor: int) -> Any:
    """x @ y / divisor for two secrets and a public integer divisor, in the rounds of one
    product: the Beaver product at twice the scale and one truncation by the divisor
    instead of by 2^p (a product then scaled by a public factor, attention's scores times
    1/sqrt(d): `scaled_divisor`). Magnitudes at twice the scale are those of the plain
    product's, so the ring's range is the same."""
    from crypten.mpc.primitives import beaver

    out = x.clone()
    out._tensor.share = beaver.matmul(x._tensor, y._tensor).share
    return out.div(divisor)


def products_at_once(pairs: list[tuple[Any, Any]]) -> list[Any]:
    """x * y (elementwise, broadcasting) for several pairs of secrets, in the rounds of one
    product: every pair's x - a and y - b opened in one exchange, and every result
    truncated in one more. CrypTen's `*` takes two rounds per product, so independent
    products of different shapes (a normalization's gamma beside its Newton step) cost
    two rounds each; here two in all."""
    import crypten
    import crypten.communicator as comm
    import torch
    from crypten.mpc import MPCTensor

    from smpc import meter

    provider = crypten.mpc.get_default_provider()
    rank = comm.get().get_rank()
    with meter.piece("products") as piece:
        triples = [provider.generate_additive_triple(x.size(), y.size(), "mul") for x, y in pairs]
        masked = []
        for (x, y), (a, b, _) in zip(pairs, triples):
            masked += [x.share - a.share, y.share - b.share]
        flat = comm.get().all_reduce(torch.cat([t.reshape(-1) for t in masked]))  # the one round
        opened = [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in masked]), masked)]
        shares = []
        for (a, b, c), epsilon, delta in zip(triples, opened[0::2], opened[1::2]):
            z = c.share + epsilon * b.share + a.share * delta  # the Beaver product's share
            shares.append(z + epsilon * delta if rank == 0 else z)
        piece.elements = sum(z.numel() for z in shares)
    precision = crypten.cfg.encoder.precision_bits
    out = MPCTensor.from_shares(torch.cat([z.reshape(-1) for z in shares]), precision=precision)
    out._tensor.div_(2**precision)  # every product's truncation in one round
    return [part.view(z.shape) for part, z in zip(out.split([z.numel() for z in shares]), shares)]


def from_client_share(share: Any) -> Any:
    """A CrypTensor from this party's share of a client's input: ring elements (int64)
    at the fixed-point scale, split by the client (see smpc.serve.shares)."""
    import crypten
    from crypten.mpc import MPCTensor

    return MPCTensor.from_shares(share, precision=crypten.cfg.encoder.precision_bits)


def share_for_client(x: Any) -> Any:
    """This party's share of `x` (int64, at the fixed-point scale) for the client alone
    to add up. A fresh zero-sharing (CrypTen's pairwise PRZS, no communication) is added
    first, so that the shares the client receives are uniform given their sum and say
    nothing of how the output was computed."""
    from crypten.mpc.primitives import ArithmeticSharedTensor

    x = to_fixed_point(x)
    zero = ArithmeticSharedTensor.PRZS(x.size(), device=x.device)
    return x._tensor.share + zero.share
