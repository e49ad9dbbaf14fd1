"""One-round comparisons and truncation from the dealer's keys (`protocol.comparisons: fss`).

With a trusted dealer and exactly two computing parties, every comparison costs one
round: each party adds its share of a dealer mask r to its share of x and the two open
x^ = x + r; the dealer gave each party a DCF key (smpc.protocols.dcf) for the threshold
r's low 63 bits, and both evaluate it at x^'s low 63 bits locally. The sign of x follows
from one carry: msb(x) = msb(x^) xor msb(r) xor [x^_low < r_low] (Boyle, Chandran,
Gilboa, Gupta, Ishai, Kumar and Rathee, "Function Secret Sharing for Mixed-Mode and
Fixed-Point Secure Computation", EUROCRYPT 2021, section 4; the DReLU of AriaNN: Ryffel,
Tholoniat, Pointcheval and Bach, PoPETs 2022). The dealer folds msb(r) into the payload
(beta = 1 - 2 msb(r)), so a party's share of u = msb(r) xor carry is its share of msb(r)
plus its DCF output, and msb(x) = msb(x^) + (1 - 2 msb(x^)) u is linear in u.

- **ltz** ([x < 0], CrypTen's `_ltz`): the above, 8 bytes per element per party.
- **ReLU** in the same single round: x (1 - msb(x)) with x = x^ - r needs shares of u and
  of r u; the DCF carries the pair (1 - 2 msb(r), r (1 - 2 msb(r))) as its payload and
  the dealer adds shares of msb(r) and r msb(r) (BCG+21's spline gate with one DCF).
- **max** by a tree of b + ReLU(a - b) (one round per level: `approx.max_values`);
  **argmax** by the maximum, then [x == max] (two ltz in one round), then the first of
  the tied positions ([cumsum > 0] differences, one round): exact, ties to the lowest index.
- **eq**: 1 - [x < 0] - [-x < 0], one round (exact for every ring value but -2^63).
- **select** b + c (a - b) for a comparison bit c (smpc.model.ops.where, and the pieces of the
  approximations): one Beaver product, unchanged.
- **truncation** (division by a public integer d, after every fixed-point product):
  party 0 adds K = d floor(2^62 / d) so that y = x + K is in [0, 2^63) for |x| < 2^61;
  the parties open c = y + r (one round); then y = c - r + 2^64 w with the wrap bit
  w = msb(r) (1 - msb(c)) (y's top bit is 0), so floor(y / d) = floor(c / d) -
  floor(r / d) + w floor(2^64 / d) + e, e in {-1, 0, 1}, from the dealer's shares of
  floor(r / d) and msb(r). The result is within one unit of floor(x / d) for every
  divisor and never wraps (for a power of two, it is floor(x / d) or one more, with
  probability the dropped fraction: stochastic rounding). This is the dealer-aided
  truncation of a masked opening with a known-zero top bit (Escudero, Ghosh, Keller,
  Rachuri and Scholl, "Improved Primitives for MPC over Mixed Arithmetic-Binary
  Circuits", CRYPTO 2020, section 4; SIGMA's truncate-reduce uses the same wrap bit).
  CrypTen's two-party truncation divides each share locally and returns a value off
  by 2^64 / d with probability |x| / 2^63.

**Narrow keys.** Where a calibration bounds the values an op compares (|x| < 2^(w-1) in
ring units), its comparisons run on w bits instead of 64: x mod 2^w is x itself read as a
w-bit two's complement integer, and (x + r) mod 2^w = (x mod 2^w + r mod 2^w) mod 2^w, so
the same gate on x^ mod 2^w and r mod 2^w, with a DCF of w - 1 levels, gives msb_w(x) =
[x < 0] (the reduction of shares modulo a smaller power of two that SIGMA, Gupta et al.,
"SIGMA: Secure GPT Inference with Function Secret Sharing", PoPETs 2024, uses for its
comparisons). The key bytes, the dealer's work and the parties' shrink with w; ReLU keeps
x^ and r whole for x (1 - msb(x)). A value outside the width gives a wrong bit, so the
widths come only from a calibration, with its margin and headroom
(smpc.model.calibrate.ComparisonWidths, applied per op by `bounded_comparisons`), and
the range checks stop a run whose values leave the calibrated ranges.

Keys and masks are never reused: each request draws fresh masks and seeds from the
party's stream and takes the next key the dealer sent, checked by its digest.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc.protocols import dcf
from smpc.protocols.ring_matmul import wrapped

RING_BITS = 64
DCF_KINDS = {"ltz": 1, "relu": 2}  # kind -> DCF payload width
KINDS = ("ltz", "relu", "trunc")
# per kind, how many values the dealer secret-shares beside the key (party 0's corrections)
_SHARED = {"ltz": 1, "relu": 2, "trunc": 2}
MAX_DIVISOR = 1 << 31


def _msb(x: torch.Tensor, width: int = RING_BITS) -> torch.Tensor:
    # the sign bit of x read as a `width`-bit two's complement integer (x mod 2^width)
    return (x >> (width - 1)) & 1


def _low(x: torch.Tensor, width: int) -> torch.Tensor:
    # the bits below that sign bit: the DCF's input
    return x & ((1 << (width - 1)) - 1)


def width(kind: str, args: tuple[Any, ...]) -> int:
    """The ring width a comparison request runs on: RING_BITS, or the narrower width its
    args name (its values are known to lie in [-2^(width-1), 2^(width-1)))."""
    return args[1] if kind in DCF_KINDS and len(args) > 1 else RING_BITS


def comparison_args(shape: torch.Size, bits: int) -> tuple[Any, ...]:
    """A comparison request's args: the shape, and the width when narrower than the ring."""
    if not 2 <= bits <= RING_BITS:
        raise ValueError(f"expected a comparison width of 2..{RING_BITS} bits, got {bits}")
    return (shape,) if bits == RING_BITS else (shape, bits)


def udiv(x: torch.Tensor, d: int | torch.Tensor) -> torch.Tensor:
    """floor(x / d) for x read as unsigned 64-bit integers, 1 <= d < 2^31 (an int, or
    int64 divisors that broadcast with x)."""
    low, high = (d, d) if isinstance(d, int) else (int(d.min()), int(d.max()))
    if not (1 <= low and high < MAX_DIVISOR):
        raise ValueError(f"expected divisors in 1..2^31 - 1, got {low if low < 1 else high}")
    if low == high and low & (low - 1) == 0:  # one power of two (the fixed-point scale): a logical shift
        k = low.bit_length() - 1
        return (x >> k) & ((1 << (64 - k)) - 1) if k else x.clone()
    hi, lo = (x >> 32) & 0xFFFFFFFF, x & 0xFFFFFFFF
    q_hi = hi // d
    q_lo = (((hi - q_hi * d) << 32) | lo) // d  # (hi mod d) * 2^32 + lo < 2^63
    return (q_hi << 32) + q_lo


def count(args: tuple[Any, ...]) -> int:
    """Elements of one request (args = (shape, ...))."""
    return math.prod(args[0])


def divisor_arg(divisor: int | torch.Tensor) -> int | tuple[tuple[int, ...], tuple[int, ...]]:
    """A truncation's public divisors as a request argument: an int, or (shape, values)
    of a tensor that broadcasts to the shares (both sides of the dealer's stream name
    the request by it)."""
    if isinstance(divisor, int):
        return divisor
    return (tuple(divisor.shape), tuple(int(v) for v in divisor.reshape(-1)))


def divisors(args: tuple[Any, ...]) -> int | torch.Tensor:
    """A truncation request's divisors (args = (shape, divisor_arg)): its one divisor as
    an int, or every element's as [n] int64."""
    shape, d = args[0], args[1]
    if isinstance(d, int):
        return d
    return torch.tensor(d[1], dtype=torch.int64).view(d[0]).expand(shape).reshape(-1)


@dataclass(frozen=True)
class GateKey:
    """What one party holds for one request: its mask share, DCF root seeds and the
    correction words (comparisons), its shares of the dealer's secret values."""

    mask: torch.Tensor
    root: torch.Tensor | None
    keys: dcf.DcfKeys | None
    shares: tuple[torch.Tensor, ...]


def _draw(kind: str, generator: Any, rank: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
    # the order every party and the dealer draw in: mask, root seeds, shares (party 0's
    # shares are the dealer's corrections, not drawn)
    mask = generator.ring((n,))
    root = generator.ring((n, 2)) if kind in DCF_KINDS else None
    shares = [] if rank == 0 else [generator.ring((n,)) for _ in range(_SHARED[kind])]
    return mask, root, shares


def _key_words(kind: str, args: tuple[Any, ...]) -> int:
    # the DCF correction words of a request of `kind` (none for a truncation): one level
    # per bit below the sign bit of its width
    return dcf.DcfKeys.size(count(args), width(kind, args) - 1, DCF_KINDS[kind]) if kind in DCF_KINDS else 0


def item_size(kind: str, rank: int, args: tuple[Any, ...]) -> int:
    """int64 words the dealer sends party `rank` for one request (0: nothing)."""
    n = count(args)
    return _key_words(kind, args) + (n * _SHARED[kind] if rank == 0 else 0)


def dealer_material(kind: str, generators: list[Any], args: tuple[Any, ...]) -> dict[int, torch.Tensor]:
    """At the dealer: every party's draws for one request, then what each party must
    receive (party 0: the key's correction words and its shares; party 1: the words).
    Both are views of one buffer: the words are written once, never copied."""
    if len(generators) != 2:
        raise ValueError("FSS material is for exactly two computing parties")
    n = count(args)
    draws = [_draw(kind, g, rank, n) for rank, g in enumerate(generators)]
    r = draws[0][0] + draws[1][0]
    words = _key_words(kind, args)
    buffer = torch.empty(words + n * _SHARED[kind], dtype=torch.int64)
    if kind == "trunc":
        secrets = [udiv(r, divisors(args)), _msb(r)]
    else:
        bits = width(kind, args)
        r_msb = _msb(r, bits)
        sign = 1 - 2 * r_msb
        beta = sign.view(n, 1) if kind == "ltz" else torch.stack([sign, r * sign], dim=1)
        root0, root1 = draws[0][1], draws[1][1]
        if root0 is None or root1 is None:  # _draw draws root seeds for every DCF kind
            raise RuntimeError(f"no DCF root seeds drawn for a {kind} request")
        dcf.gen(_low(r, bits), beta, (root0, root1), bits - 1, out=buffer[:words])
        secrets = [r_msb] if kind == "ltz" else [r_msb, r * r_msb]
    corrections = buffer[words:].view(_SHARED[kind], n)
    for i, (secret, other) in enumerate(zip(secrets, draws[1][2])):
        torch.sub(secret, other, out=corrections[i])
    return {0: buffer, 1: buffer[:words]} if words else {0: buffer}


def party_key(kind: str, generator: Any, rank: int, args: tuple[Any, ...], item: torch.Tensor | None) -> GateKey:
    """At a party: its own draws for one request and what the dealer sent it."""
    n = count(args)
    mask, root, shares = _draw(kind, generator, rank, n)
    keys = None
    if item is not None:
        if item.dtype != torch.int64 or item.numel() != item_size(kind, rank, args):
            raise ValueError(
                f"expected {item_size(kind, rank, args)} int64 words for a {kind} key of {n} elements, "
                f"got {item.numel()} {item.dtype}"
            )
        item = item.reshape(-1)
        if kind in DCF_KINDS:
            size = _key_words(kind, args)
            keys = dcf.DcfKeys.unpack(item[:size], n, width(kind, args) - 1, DCF_KINDS[kind])
            item = item[size:]
        if rank == 0:
            shares = list(item.view(_SHARED[kind], n))
    return GateKey(mask, root, keys, tuple(shares))


# -- the local half of each gate: party `rank`'s share from the opened value --------


def _dcf_key(key: GateKey) -> tuple[torch.Tensor, dcf.DcfKeys]:
    # a comparison's key: its root seeds and correction words (a truncation's has none)
    if key.root is None or key.keys is None:
        raise RuntimeError("a comparison gate was given a key without DCF keys")
    return key.root, key.keys


def ltz_local(rank: int, opened: torch.Tensor, key: GateKey) -> torch.Tensor:
    """Share of [x < 0] (msb of x) from x^ = x + r."""
    root, keys = _dcf_key(key)
    bits = keys.bits + 1
    m = _msb(opened, bits)
    u = key.shares[0] + dcf.eval_(rank, root, keys, _low(opened, bits))[:, 0]
    out = (1 - 2 * m) * u
    return out + m if rank == 0 else out


def relu_local(rank: int, opened: torch.Tensor, key: GateKey) -> torch.Tensor:
    """Share of ReLU(x) = x (1 - msb(x)) from x^ = x + r."""
    root, keys = _dcf_key(key)
    bits = keys.bits + 1
    m = _msb(opened, bits)
    d = dcf.eval_(rank, root, keys, _low(opened, bits))
    u, ru = key.shares[0] + d[:, 0], key.shares[1] + d[:, 1]
    sign = 1 - 2 * m
    out = sign * ru - opened * sign * u - (1 - m) * key.mask
    return out + opened * (1 - m) if rank == 0 else out


def trunc_offset(d: int | torch.Tensor) -> int | torch.Tensor:
    """K: a multiple of d that party 0 adds before opening, so that x + K >= 0 (for one
    divisor d an int, for int64 divisors that broadcast with x a tensor)."""
    if isinstance(d, int):
        return d * ((1 << 62) // d)
    return d * udiv(torch.full_like(d, 1 << 62), d)


def trunc_local(rank: int, opened: torch.Tensor, key: GateKey, d: int | torch.Tensor) -> torch.Tensor:
    """Share of x / d (within one unit) from c = x + K + r, for one divisor d (an int: its
    constants are Python's, not a tensor's per element) or divisors d ([n] int64)."""
    # floor(2^64 / d) mod 2^64 (as an int64), and floor(K / d)
    if isinstance(d, int):
        wrap_q: int | torch.Tensor = wrapped(2**64 // d)
        offset_q: int | torch.Tensor = (1 << 62) // d
    else:  # floor((2^64 - 1) / d), plus one where d divides 2^64
        wrap_q = udiv(torch.full_like(d, -1), d) + ((d & (d - 1)) == 0).long()
        offset_q = udiv(torch.full_like(d, 1 << 62), d)
    out = -key.shares[0] + key.shares[1] * (1 - _msb(opened)) * wrap_q
    return out + udiv(opened, d) - offset_q if rank == 0 else out


# -- online, on CrypTensors: keys from the default provider, one opening per gate ----
#
# `smpc.switches.use_comparisons("fss")` puts these in place of CrypTen's comparisons and
# two-party truncation (`truncation="dealer"`: the truncation alone). At the dealer's
# shape-only run the provider records the request, emits its keys and returns None: the
# gate then yields zeros of the right shape.


# the width of the comparisons of the op running now (bounded_comparisons); every party
# and the dealer's trace run the same program, so they name the same widths
_width = [RING_BITS]


@contextmanager
def bounded_comparisons(bits: int | None) -> Iterator[None]:
    """Within: comparisons run on `bits` bits (their inputs are known to lie in
    [-2^(bits-1), 2^(bits-1))); None keeps the current width."""
    if bits is not None and not 2 <= bits <= RING_BITS:
        raise ValueError(f"expected a comparison width of 2..{RING_BITS} bits, got {bits}")
    _width.append(_width[-1] if bits is None else bits)
    try:
        yield
    finally:
        _width.pop()


def _gate(kind: str, share: torch.Tensor, divisor: int | torch.Tensor | None = None) -> torch.Tensor:
    import crypten.communicator as comm
    import crypten.mpc

    from smpc import meter

    flat = share.reshape(-1)
    if kind in DCF_KINDS:
        args = comparison_args(torch.Size(share.shape), _width[-1])
    else:
        args = (torch.Size(share.shape),) + ((divisor_arg(divisor),) if divisor is not None else ())
    with meter.protocols().spent("truncations" if kind == "trunc" else "comparisons", flat.numel()):
        key = crypten.mpc.get_default_provider().fss_key(kind, args)
        if key is None:  # the dealer's trace: only shapes matter
            return torch.zeros_like(share)
        rank = comm.get().get_rank()
        masked = flat + key.mask
        if kind == "trunc":  # one divisor stays an int; divisors broadcast to the elements
            if divisor is None:
                raise ValueError("a truncation without its divisor")
            d = (
                divisor
                if isinstance(divisor, int)
                else torch.as_tensor(divisor, dtype=torch.int64).expand(share.shape).reshape(-1)
            )
            if rank == 0:
                masked = masked + trunc_offset(d)
        opened = comm.get().all_reduce(masked)  # the one round
        if kind == "ltz":
            out = ltz_local(rank, opened, key)
        elif kind == "relu":
            out = relu_local(rank, opened, key)
        else:
            out = trunc_local(rank, opened, key, d)
    return out.view(share.shape)


def ltz(x: Any) -> Any:
    """[x < 0] of a secret x, as 0/1 shares at scale 1 (CrypTen's `_ltz`)."""
    from crypten.mpc import MPCTensor

    return MPCTensor.from_shares(_gate("ltz", x.share), precision=0)


def relu(x: Any) -> Any:
    """ReLU(x) of a secret x in one round."""
    out = x.clone()
    out.share = _gate("relu", x.share)
    return out


def eq(x: Any, y: Any) -> Any:
    """[x == y] as 0/1 shares at scale 1: two ltz in one round."""
    import crypten

    d = x - y
    bits = ltz(crypten.stack([d, -d]))
    return 1 - bits[0] - bits[1]


def truncate(share: torch.Tensor, divisor: int | torch.Tensor) -> torch.Tensor:
    """This party's share of x / divisor (within one unit) from its share of x; `divisor`
    is a public integer or an int64 tensor that broadcasts to the share."""
    if isinstance(divisor, torch.Tensor) and divisor.numel() == 1:
        divisor = int(divisor.reshape(-1)[0])
    low = divisor if isinstance(divisor, int) else int(divisor.min())
    high = divisor if isinstance(divisor, int) else int(divisor.max())
    if low < 1 or high >= MAX_DIVISOR:
        raise ValueError(
            f"the dealer's truncation divides by public integers 1..2^31 - 1, got {low if low < 1 else high}"
        )
    return _gate("trunc", share, divisor)


def argmax_onehot(x: Any, dim: int) -> tuple[Any, Any]:
    """(max with keepdim, one-hot of the first maximal position) along `dim`."""
    import crypten

    from smpc.protocols.approx import max_values

    dim = dim % x.dim()
    top = max_values(x, dim, keepdim=True)
    m = x.size(dim)
    if m == 1:
        return top, x * 0 + 1
    hits = eq(x, top)  # several where values tie
    seen = ltz(-hits.cumsum(dim))  # [a maximum at or before this position]
    first, rest = seen.split([1, m - 1], dim=dim)
    before, _ = seen.split([m - 1, 1], dim=dim)
    return top, crypten.cat([first, rest - before], dim=dim)


def _indices(onehot: Any, dim: int, keepdim: bool) -> Any:
    shape = [1] * onehot.dim()
    shape[dim] = onehot.size(dim)
    return (onehot * torch.arange(onehot.size(dim)).view(shape)).sum(dim, keepdim=keepdim)


def tensor_max(self: Any, dim: int | None = None, keepdim: bool = False, one_hot: bool = True) -> Any:
    """CrypTen's `max` with these protocols (same signature and results; ties go to the
    first position instead of a random one)."""
    if dim is None:
        from smpc.protocols.approx import max_values

        return max_values(self.flatten(), 0)
    top, onehot = argmax_onehot(self, dim)
    values = top if keepdim else top.squeeze(dim % self.dim())
    return values, onehot if one_hot else _indices(onehot, dim % self.dim(), keepdim)


def tensor_argmax(self: Any, dim: int | None = None, keepdim: bool = False, one_hot: bool = True) -> Any:
    """CrypTen's `argmax` with these protocols."""
    if dim is None:
        _, onehot = argmax_onehot(self.flatten(), 0)
        return onehot.view(self.size()) if one_hot else _indices(onehot, 0, False)
    _, onehot = argmax_onehot(self, dim)
    return onehot if one_hot else _indices(onehot, dim % self.dim(), keepdim)


def tensor_max_pool2d(
    self: Any,
    kernel_size: Any,
    padding: Any = 0,
    stride: Any = None,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """CrypTen's `max_pool2d` with these protocols (the values alone need no argmax)."""
    from crypten.common.functions.pooling import _pool2d_reshape

    from smpc.protocols.approx import max_values

    windows = self.clone()
    windows.share, output_size = _pool2d_reshape(
        self.share,
        kernel_size,
        padding=padding,
        stride=stride,
        dilation=dilation,
        ceil_mode=ceil_mode,
        pad_value=-(2**24),  # CrypTen's padding: below every value, yet safe to subtract
    )
    if not return_indices:
        return max_values(windows, -1).view(output_size)
    values, onehot = tensor_max(windows, dim=-1)
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    return values.view(output_size), onehot.view(tuple(output_size) + kernel)
