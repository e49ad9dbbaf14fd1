"""Arithmetic modulo word-size primes on whole arrays: what the homomorphic layer needs
for its masks, its flooding and its CRT, without a Python integer per slot.

Every modulus here is below 2^44 (the plaintext primes are 40 bits, SEAL's coefficient
primes 43 and 44), so a product of two residues needs up to 88 bits: `mulmod` splits one
factor in 16-bit pieces (Horner's rule) so that no intermediate value passes 2^61 in
uint64. Multi-word integers are [S, W] uint64 arrays, word 0 the lowest.
"""

from __future__ import annotations

import math

import numpy as np

from smpc.protocols.csprng import AesCtrGenerator

MAX_BITS = 44


def mulmod(a: np.ndarray, b: np.ndarray | int, q: int) -> np.ndarray:
    """a b mod q for a, b in [0, q), q < 2^44 (uint64 arrays, or b an int)."""
    if q >= 1 << MAX_BITS:
        raise ValueError(f"expected a modulus below 2^{MAX_BITS}, got {q}")
    qq = np.uint64(q)
    b64 = np.uint64(b) if isinstance(b, int) else b.astype(np.uint64)
    a64 = a.astype(np.uint64)
    out = ((a64 >> np.uint64(32)) * b64) % qq  # the top piece: below 2^12 times below 2^44
    for shift in (16, 0):
        piece = (a64 >> np.uint64(shift)) & np.uint64(0xFFFF)
        out = ((out << np.uint64(16)) + piece * b64) % qq
    result: np.ndarray = out
    return result


def residues(words: np.ndarray, q: int) -> np.ndarray:
    """The integers sum_w words[:, w] 2^(64 w) mod q, [S] uint64."""
    step = pow(2, 64, q)
    out = np.zeros(words.shape[0], dtype=np.uint64)
    for w in range(words.shape[1] - 1, -1, -1):
        out = (mulmod(out, step, q) + words[:, w].astype(np.uint64) % np.uint64(q)) % np.uint64(q)
    return out


def uniform(generator: AesCtrGenerator, n: int, q: int) -> np.ndarray:
    """n values uniform in [0, q) (rejection sampling on bitlen(q)-bit draws: exact)."""
    bits = q.bit_length()
    out = np.empty(0, dtype=np.uint64)
    while out.size < n:
        draws = generator.ring((2 * (n - out.size) + 16,)).numpy().view(np.uint64) & np.uint64((1 << bits) - 1)
        out = np.concatenate([out, draws[draws < np.uint64(q)]])
    return out[:n]


def shifted(words: np.ndarray, shift: int) -> np.ndarray:
    """[S, 2] uint64 128-bit integers shifted right by `shift` (1..127)."""
    lo, hi = words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)
    if shift >= 64:
        return np.stack([hi >> np.uint64(shift - 64), np.zeros_like(hi)], axis=1)
    s = np.uint64(shift)
    return np.stack([(lo >> s) | (hi << np.uint64(64 - shift)), hi >> s], axis=1)


class Crt:
    """Reconstruction from residues modulo pairwise coprime `moduli` (Garner's mixed radix,
    H. L. Garner, "The residue number system", IRE Trans. Electronic Computers, 1959):
    each integer's mixed-radix digits, then its value centered in (-T/2, T/2] mod 2^64."""

    def __init__(self, moduli: list[int]) -> None:
        self.moduli = moduli
        self.total = math.prod(moduli)
        # prod_{k<j} t_k mod t_i, and the inverses of prod_{k<i} t_k mod t_i
        self._radix = [[math.prod(moduli[:j]) % t for j in range(i)] for i, t in enumerate(moduli)]
        self._inverse = [pow(math.prod(moduli[:i]) % t, -1, t) if i else 1 for i, t in enumerate(moduli)]
        self._low = [math.prod(moduli[:j]) % (1 << 64) for j in range(len(moduli))]
        half = self.total // 2
        self._half_digits = []
        for t in moduli:
            self._half_digits.append(half % t)
            half //= t

    def signed_low_words(self, rows: np.ndarray) -> np.ndarray:
        """For residues [len(moduli), S] (row i modulo moduli[i]): each integer v in [0, T)
        they name, as (v - T if v > T/2 else v) mod 2^64, [S] int64."""
        digits: list[np.ndarray] = []
        for i, t in enumerate(self.moduli):
            qq = np.uint64(t)
            acc = np.zeros(rows.shape[1], dtype=np.uint64)
            for j, c in enumerate(digits):
                acc = (acc + mulmod(c, self._radix[i][j], t)) % qq
            digits.append(mulmod((rows[i].astype(np.uint64) + qq - acc) % qq, self._inverse[i], t))
        low = np.zeros(rows.shape[1], dtype=np.uint64)
        for c, radix in zip(digits, self._low):
            low = low + c * np.uint64(radix)  # wraps mod 2^64, as wanted
        greater = np.zeros(rows.shape[1], dtype=bool)
        decided = np.zeros(rows.shape[1], dtype=bool)
        for c, h in zip(reversed(digits), reversed(self._half_digits)):
            greater |= ~decided & (c > np.uint64(h))
            decided |= c != np.uint64(h)
        low = low - greater.astype(np.uint64) * np.uint64(self.total % (1 << 64))
        out: np.ndarray = low.view(np.int64)
        return out
