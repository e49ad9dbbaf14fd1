"""x @ W in Z/2^64 through float64 BLAS, for a W that stays the same (a weight's mask
share, its opened D = W - B, the dealer's mask B).

torch multiplies int64 matrices without BLAS: measured here on one thread, a lookup's
one-hot [16, 30522] @ table [30522, 384] takes 1.5 s, a [16, 384] @ [384, 1536] layer
31 ms. Split into 16-bit limbs, x = sum_i x_i 2^(16 i) and W = sum_j W_j 2^(16 j), the
product mod 2^64 is sum over i + j <= 3 of (x_i @ W_j) 2^(16 (i + j)): ten float64
products, each exact while its sums stay below 2^53 (a limb product is below 2^32, so up
to 2^21 terms), taken four at a time (the x limbs stacked). W's limbs are made once
per session and kept as uint16 instead of W (the same memory; float64 limbs would take
four times that), turned into float64 one at a time as they are used, into a buffer kept
for the purpose: a fresh 94 MB float64 tensor per limb (a lookup table's) costs 60 ms
in page faults alone, the copy into a kept one 15 ms. Convolutions stay int64 (torch's
float64 convolution is no faster here).
"""

from __future__ import annotations

import sys
import threading

import torch

LIMB_BITS = 16
LIMBS = 64 // LIMB_BITS
MASK = (1 << LIMB_BITS) - 1
# sums of this many products of two limbs stay exact in a float64 (53-bit mantissa)
EXACT_TERMS = 2 ** (53 - 2 * LIMB_BITS)


def limbs(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """x's 16-bit limbs, lowest first: [LIMBS, *x.shape] (two's complement bits:
    x = sum_i limbs[i] 2^(16 i) mod 2^64), as float64 or as uint16."""
    if sys.byteorder == "little":  # an int64's four 16-bit words are its limbs, lowest first
        words = x.contiguous().reshape(-1).view(torch.uint16).reshape(*x.shape, LIMBS)
        return torch.empty((LIMBS, *x.shape), dtype=dtype).copy_(words.movedim(-1, 0))
    return torch.stack([((x >> (LIMB_BITS * i)) & MASK).to(torch.int32).to(dtype) for i in range(LIMBS)])


_scratch = threading.local()  # per thread: the dealer's threads may multiply at once


def _as_float64(limb: torch.Tensor) -> torch.Tensor:
    # limb as float64, in this thread's kept buffer (valid until the next call)
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < limb.numel():
        buffer = _scratch.buffer = torch.empty(limb.numel(), dtype=torch.float64)
    out = buffer[: limb.numel()].view(limb.shape)
    out.copy_(limb)
    return out


class FixedMatrix:
    """An int64 right operand of matmuls, held as its limbs (or, past the exact float64
    range, as itself)."""

    def __init__(self, value: torch.Tensor) -> None:
        exact = value.dim() == 2 and value.shape[0] <= EXACT_TERMS
        self.shape = value.shape
        self._limbs = limbs(value, torch.uint16) if exact else None
        self._value = None if exact else value

    def rmatmul(self, x: torch.Tensor) -> torch.Tensor:
        """x @ value mod 2^64 (int64), exactly as torch.matmul on int64 would give it."""
        if self._limbs is None:
            if self._value is None:  # one of the two is always kept
                raise RuntimeError("a fixed matrix holds neither its limbs nor its value")
            return torch.matmul(x, self._value)
        if x.dim() < 2:
            return self.rmatmul(x.unsqueeze(0)).squeeze(0)
        xl = limbs(x)
        out = torch.zeros(*x.shape[:-1], self.shape[-1], dtype=torch.int64)
        for j in range(LIMBS):
            w = _as_float64(self._limbs[j])
            products = torch.matmul(xl[: LIMBS - j], w).to(torch.int64)  # i = 0 .. 3 - j
            for i in range(LIMBS - j):
                out += products[i] << (LIMB_BITS * (i + j))
        return out
