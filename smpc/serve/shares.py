"""A client's secret shares: fixed-point encoding in CrypTen's ring, and splitting.

A client encodes its input as CrypTen does (x * 2^precision_bits, rounded, in the ring
of integers mod 2^64), splits it into one additive share per party with randomness from
the operating system's CSPRNG, and later adds the parties' output shares back up. Any
n-1 of the shares are uniformly random: each party alone learns nothing of the query.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

RING_BITS = 64
# |x| * 2^precision must stay well inside the ring, with room for the model's arithmetic
SAFE_BITS = 40


def encode(x: torch.Tensor, precision_bits: int) -> torch.Tensor:
    """`x` as ring elements (int64); refuses values that are not finite or too large."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("the input has values that are not finite (nan or inf)")
    limit = 2.0 ** (SAFE_BITS - precision_bits)
    if x.numel() and float(x.abs().max()) >= limit:
        raise ValueError(f"the input has values of magnitude {float(x.abs().max()):.3g}; expected below {limit:g}")
    return torch.round(x * (1 << precision_bits)).to(torch.int64)


def random_ring(shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform int64 ring elements from the OS's CSPRNG (secrets.token_bytes)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    values = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.int64).reshape(shape)
    return torch.from_numpy(values.copy())


def split(encoded: torch.Tensor, parties: int) -> list[torch.Tensor]:
    """Additive shares of `encoded` (int64), one per party, that add up mod 2^64."""
    masks = [random_ring(tuple(encoded.shape)) for _ in range(parties - 1)]
    first = encoded.clone()
    for m in masks:
        first -= m  # int64 arithmetic wraps: exactly the ring mod 2^64
    return [first, *masks]


def reconstruct(shares: list[torch.Tensor]) -> torch.Tensor:
    """The ring element the shares add up to."""
    total = shares[0].clone()
    for s in shares[1:]:
        total += s
    return total


def decode(encoded: torch.Tensor, precision_bits: int) -> torch.Tensor:
    """Ring elements back to real values (float32)."""
    return (encoded.to(torch.float64) / (1 << precision_bits)).to(torch.float32)
