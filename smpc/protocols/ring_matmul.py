"""x @ W in Z/2^64 for a W that stays the same (a weight's mask share, its opened
D = W - B, the dealer's mask B), in whichever of three exact forms is fastest on this CPU.

How fast torch's own int64 matmul is depends on the CPU by a factor of fifty: a lookup's
one-hot [16, 30522] @ table [30522, 384] took 1.3 s on one thread of the AMD EPYC this
project ran on until 2026-12-06, 29 ms on the Intel Xeon it runs on since. So each
process measures the three forms once on a product of that kind (`fastest_form`) and
uses the fastest; all three give the same ring elements.

- **int64**: torch.matmul on W itself.
- **int8 digits** (where the CPU's int8 GEMMs are exact: checked once, on the digits that
  strain them most; without VNNI, oneDNN's kernels saturate intermediate sums). x =
  sum_i x_i 2^(8 i) and W = sum_j W_j 2^(8 j) in bytes, and the product mod 2^64 is the
  sum over i + j <= 7 of (x_i @ W_j) 2^(8 (i + j)): 36 products of int8 matrices with
  int32 sums (`torch._int_mm`), taken one W digit at a time against x's digits stacked.
  Each side's bytes are read as signed by flipping the top bit (x_i = s_i + 128), so
  s_i @ t_j is corrected by 128 times s_i's row sums (per product, one more GEMM), t_j's
  column sums and 128 K (made once). A sum of K products of two digits is below K 2^14
  in magnitude, so K is cut in pieces of at most 2^16 - 1 terms: exact in int32, with
  room for the kernels' own unsigned-times-signed form (255 * 128 * K < 2^31).
- **16-bit limbs in float64**: ten float64 products of limbs, i + j <= 3, each exact
  while its sums stay below 2^53 (up to 2^21 terms; past that, int64), taken four at a
  time (x's limbs stacked); W's limbs kept as uint16 and turned into float64 one at a
  time, into a buffer kept for the purpose (a fresh 94 MB float64 tensor costs 60 ms in
  page faults alone).

Each form holds W in the memory of W itself (the int64s, eight int8 digits or four uint16
limbs), made once per session. `python benchmarks/ring_matmul.py` times the three on the
encoders' shapes. Convolutions stay int64.
"""

from __future__ import annotations

import functools
import sys
import threading
import time

import torch

from smpc.protocols.csprng import AesCtrGenerator

DIGIT_BITS = 8
DIGITS = 64 // DIGIT_BITS
# terms of one int32 sum: |digit products| <= 2^14, and the kernels' u8 * s8 form of a
# signed product (255 * 128 per term) stays below 2^31 too
PIECE = 2**16 - 1

LIMB_BITS = 16
LIMBS = 64 // LIMB_BITS
MASK = (1 << LIMB_BITS) - 1
# sums of this many products of two limbs stay exact in a float64 (53-bit mantissa)
EXACT_TERMS = 2 ** (53 - 2 * LIMB_BITS)


def wrapped(value: int) -> int:
    """An integer mod 2^64 as the int64 that holds it (two's complement)."""
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def signed_bytes(x: torch.Tensor) -> torch.Tensor:
    """x's bytes, lowest first, each minus 128: [DIGITS, *x.shape] int8, so that
    x = sum_i (s_i + 128) 2^(8 i) mod 2^64."""
    if sys.byteorder == "little":  # an int64's eight bytes are its digits, lowest first
        raw = x.contiguous().reshape(-1).view(torch.uint8).reshape(*x.shape, DIGITS)
    else:
        raw = torch.stack([(x >> (DIGIT_BITS * i)) & 0xFF for i in range(DIGITS)], -1).to(torch.uint8)
    out = torch.empty((DIGITS, *x.shape), dtype=torch.uint8).copy_(raw.movedim(-1, 0))
    return out.bitwise_xor_(0x80).view(torch.int8)  # b XOR 128 read as signed is b - 128


def _row_major(m: torch.Tensor) -> torch.Tensor:
    # m with strides (columns, 1): torch calls a one-row view of any stride contiguous,
    # and torch._int_mm then reads it with that stride as its leading dimension (wrongly)
    return m if m.stride() == (m.shape[1], 1) else torch.empty(m.shape, dtype=m.dtype).copy_(m)


def gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for int8 matrices, with int32 sums (torch._int_mm, both sides row-major)."""
    return torch._int_mm(_row_major(a), _row_major(b))


@functools.cache
def int8_exact() -> bool:
    """Whether int8 GEMMs give exact int32 sums here, on the digits that strain them
    most: every pairing of -128, -1, 0, 1 and 127, and sums of PIECE products of extremes."""
    values = torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8)
    pairings = (values.repeat_interleave(5).view(5, 5), values.repeat(5).view(5, 5))
    extremes = torch.tensor([[-128], [127]], dtype=torch.int8).expand(2, PIECE)
    try:
        return all(
            torch.equal(gemm(a, b).to(torch.int64), torch.matmul(a.long(), b.long()))
            for a, b in (pairings, (extremes, extremes.t()))
        )
    except (AttributeError, RuntimeError):  # no int8 GEMM in this torch build
        return False


# digit i's weight in the sum over i + j <= 7 of 2^(8 (i + j)) (the same for W's digit j),
# times the 128 of the other side's digit offset: sum over j <= 7 - i of 128 * 2^(8 (i + j))
_WEIGHTS = [128 * sum(1 << (DIGIT_BITS * (i + j)) for j in range(DIGITS - i)) for i in range(DIGITS)]
OFFSET_WEIGHTS = torch.tensor([wrapped(w) for w in _WEIGHTS])


def _ones(rows: int, columns: int) -> torch.Tensor:
    return torch.ones(rows, columns, dtype=torch.int8)


def _column_sums(digits: torch.Tensor) -> torch.Tensor:
    # [DIGITS, K, N] int8 -> their column sums [DIGITS, N] int64, as int8 GEMMs with a row
    # of ones (torch's own sum of int8 is 20 times slower here; so for row sums below)
    ones = _ones(1, digits.shape[1])
    return torch.cat([gemm(ones, digit) for digit in digits]).to(torch.int64)


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


class _Digits:
    """W as its int8 digits, and the correction of the digits' offsets that does not
    depend on x."""

    def __init__(self, value: torch.Tensor) -> None:
        self.shape = value.shape
        self.digits = signed_bytes(value)  # [DIGITS, K, N]
        # (s_i + 128) @ (t_j + 128) = s_i @ t_j + 128 (s_i's row sums) + 128 (t_j's column
        # sums) + 128^2 K: the last two are the same for every x, made now
        terms = value.shape[0]
        sums = sum(_column_sums(self.digits[:, start : start + PIECE]) for start in range(0, terms, PIECE))
        self.columns = (sums * OFFSET_WEIGHTS.unsqueeze(1)).sum(0) + wrapped(128 * terms * sum(_WEIGHTS))

    def rmatmul(self, rows: torch.Tensor) -> torch.Tensor:
        terms, columns = self.shape
        s = signed_bytes(rows)  # [DIGITS, rows, terms]
        out = self.columns.expand(rows.shape[0], columns).clone()
        for start in range(0, terms, PIECE):
            piece = s[:, :, start : start + PIECE]
            row_sums = gemm(piece.reshape(-1, piece.shape[-1]), _ones(piece.shape[-1], 1))
            out += (row_sums.view(DIGITS, -1).to(torch.int64) * OFFSET_WEIGHTS.unsqueeze(1)).sum(0).unsqueeze(1)
            for j in range(DIGITS):  # x's digits i = 0 .. 7 - j against W's digit j at once
                w = self.digits[j, start : start + PIECE]
                products = gemm(piece[: DIGITS - j].reshape(-1, w.shape[0]), w).view(DIGITS - j, -1, columns)
                for i in range(DIGITS - j):
                    out += products[i].to(torch.int64) << (DIGIT_BITS * (i + j))
        return out


class _Limbs:
    """W as its 16-bit limbs (uint16), multiplied in float64."""

    def __init__(self, value: torch.Tensor) -> None:
        self.shape = value.shape
        self.limbs = limbs(value, torch.uint16)

    def rmatmul(self, rows: torch.Tensor) -> torch.Tensor:
        xl = limbs(rows)
        out = torch.zeros(rows.shape[0], self.shape[-1], dtype=torch.int64)
        for j in range(LIMBS):
            w = _as_float64(self.limbs[j])
            products = torch.matmul(xl[: LIMBS - j], w).to(torch.int64)  # i = 0 .. 3 - j
            for i in range(LIMBS - j):
                out += products[i] << (LIMB_BITS * (i + j))
        return out


class _Int64:
    """W itself, multiplied by torch's int64 matmul."""

    def __init__(self, value: torch.Tensor) -> None:
        self.shape = value.shape
        self.value = value.contiguous()

    def rmatmul(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.matmul(rows, self.value)


FORMS: dict[str, type[_Int64] | type[_Digits] | type[_Limbs]] = {"int64": _Int64, "digits": _Digits, "limbs": _Limbs}
# the probe: a lookup's kind of product (few rows, many terms), small enough to take
# milliseconds where int64 is fast and a tenth of a second where it is not
PROBE_SHAPE = (16, 4096, 256)


@functools.cache
def fastest_form() -> str:
    """The form of fixed products this process uses: the fastest of FORMS (median of three
    runs each after one more; "digits" only where int8 GEMMs are exact) on a probe."""
    rows, terms, columns = PROBE_SHAPE
    generator = AesCtrGenerator(bytes(32))  # the probe's operands are not secrets: a fixed key
    x, w = generator.ring((rows, terms)), generator.ring((terms, columns))
    times = {}
    for name, form in FORMS.items():
        if name == "digits" and not int8_exact():
            continue
        fixed = form(w)
        fixed.rmatmul(x)  # a process's first product of a kind pays for its allocations
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            fixed.rmatmul(x)
            runs.append(time.perf_counter() - started)
        times[name] = sorted(runs)[1]
    return min(times, key=times.__getitem__)


class FixedMatrix:
    """An int64 right operand of matmuls, held in this process's fastest exact form
    (`fastest_form`), or, for other shapes, as itself."""

    def __init__(self, value: torch.Tensor, form: str | None = None) -> None:
        self.shape = value.shape
        name = form or fastest_form()
        if name == "digits" and not int8_exact():
            raise ValueError("int8 digits asked for where this CPU's int8 GEMMs are not exact")
        if value.dim() != 2 or (name == "limbs" and value.shape[0] > EXACT_TERMS):
            name = "int64"  # a convolution's weight, or past float64's exact sums
        self.form = name
        self._form = FORMS[name](value)

    def rmatmul(self, x: torch.Tensor) -> torch.Tensor:
        """x @ value mod 2^64 (int64), exactly as torch.matmul on int64 would give it."""
        if self.form == "int64":
            return self._form.rmatmul(x)
        if x.dim() < 2:
            return self.rmatmul(x.unsqueeze(0)).squeeze(0)
        out = self._form.rmatmul(x.reshape(-1, self.shape[0]))
        return out.view(*x.shape[:-1], self.shape[-1])
