"""Non-linear functions on shares, accurate over the ranges real models produce.

CrypTen's own approximations hold only near zero: its exp, (1 + x/2^n)^(2^n), amplifies
the input's rounding 2^n-fold and overflows for large |x|; its tanh-based GELU overflows
the ring above about 19; its inverse square root converges for inputs in about
[0.1, 100] only. The functions here bound every intermediate value instead:

- **GELU, SiLU, tanh, sigmoid** split off the sign with one comparison and write the
  function as ReLU (or sign) minus a correction d(|x|) that vanishes beyond a few units,
  the decomposition SIGMA uses (Gupta et al., "SIGMA: Secure GPT Inference with Function
  Secret Sharing", PoPETs 2024); d is a piecewise polynomial (as PUMA's GELU: Dong et
  al., "PUMA: Secure Inference of LLaMA-7B in Five Minutes", 2023), each piece in a
  local variable |w| <= 1 so no power leaves the ring, evaluated in blocks of powers
  (Paterson-Stockmeyer: fewer products of shares). Segments (GELU has one, of degree 10)
  come from a second, batched comparison; a segment's polynomial is multiplied by its
  0/1 indicator, so a piece evaluated far outside its segment (wrapped, meaningless)
  contributes exactly 0.
- **exp** clips its input to [-16, 12] (below -16 the result is 0, as PUMA and
  BumbleBee zero e^x for x < -14), evaluates e^(x/32) by a polynomial and squares five
  times (rounding amplified 32-fold, not 256-fold).
- **softmax** subtracts the row maximum, so its exp needs only [-16, 0] (masked scores,
  mapped to -10^4 by the converter, come out exactly 0): e^(y/4) squared twice; then one
  reciprocal, whose Newton steps carry the exponentials' product with the row's scale.
- **reciprocal, inverse square root, LayerNorm, RMSNorm** first find the input's binary
  magnitude with one batched comparison against powers of two, scale it into [1, 2)
  (or [1, 4)), and run Newton-Raphson from a linear start that converges there
  (normalization before Newton iteration: Catrina and Saxena, "Secure Computation With
  Fixed-Point Numbers", FC 2010; SPU's rsqrt and SIGMA's LayerNorm do the same). LayerNorm
  is invariant to scaling its row, so it scales the centered row itself by the selected
  power of two and needs the inverse square root on [0.2, 5] only: variances from 1e-4
  to 1e7 keep the full 16-bit precision.

Comparison results are 0/1 shares at scale 1 (as CrypTen's `_ltz` leaves them):
multiplying by them needs no truncation, and `fixed_point.weighted_bits` combines them with
public weights exactly. The worst error of each function over its whole input range is
measured by tests/test_approx.py and listed in docs/explanation/models.md.
"""

from __future__ import annotations

import math
from typing import Any, cast
from collections.abc import Sequence

from smpc import compat, fixed_point  # noqa: F401  (compat first: it makes crypten importable on this torch)
import crypten
import torch

from smpc.meter import step
from smpc.protocols.tables import TABLES

# past these magnitudes the functions are constant to below one unit at 16 bits
EXP_LOW, EXP_HIGH = -16.0, 12.0
# (above e^12 a product of two shares wraps the ring with probability |value| / 2^32 in
# CrypTen's two-party truncation: 4e-5 at e^12, 7% at e^19.5)
# LayerNorm / RMSNorm: binary magnitudes of the row variance told apart (2^-22 .. 2^24),
# on the variance computed with NORM_FINE_BITS more fractional bits
NORM_LEVELS = range(-22, 25)
NORM_FINE_BITS = 8
NORM_NR_ITERS = 4
# a normalization's scaled variance lies in about [1, 2): a linear start fit to
# [0.9, 2.1] (relative error 3.3e-2) is within 4e-6 after two steps (e -> 1.5 e^2)
NORM_SCALED_START, NORM_SCALED_ITERS = (1.2832, 0.29332), 2
# 1/m on [1, 2) starts at RECIPROCAL_START - 15/32 m (relative error within 0.0594)
RECIPROCAL_START = 1.40937
# a piecewise function's polynomial is evaluated in blocks of this many powers (fewer
# products, for the activations' bytes); exp's, on the softmax's path, by its powers (fewer rounds)
BLOCK = 4


def _repeat_last(x: Any, k: int) -> Any:
    # materialized copies along a new last axis (broadcast views cannot be truncated in place)
    return x.unsqueeze(-1).repeat(*([1] * x.dim()), k)


def less_than(x: Any, thresholds: Sequence[float]) -> Any:
    """Bits [x < t] for every threshold t, stacked on a new last axis: one comparison
    of the whole batch (the rounds of one, the bytes of len(thresholds))."""
    return (_repeat_last(x, len(thresholds)) - torch.tensor(thresholds, dtype=torch.float32)).lt(0)


@step("max")
def max_values(x: Any, dim: int, keepdim: bool = False) -> Any:
    """The maximum along `dim` by a tree of b + ReLU(a - b), one ReLU per level (with
    `fss`, one round each). CrypTen's `max(dim)` computes the argmax too (equality
    tests and a prefix sum on every element): a softmax or an amax needs the values only."""
    dim = dim % x.dim()
    while x.size(dim) > 1:
        m = x.size(dim)
        a, b, rest = x.split([m // 2, m // 2, m % 2], dim=dim)
        top = b + (a - b).relu()
        x = crypten.cat([top, rest], dim=dim) if rest.size(dim) else top
    return x if keepdim else x.squeeze(dim)


@step("sign")
def split_sign(x: Any) -> tuple[Any, Any, Any]:
    """(bits [x < 0], ReLU(x), |x|) with one comparison and one exact product."""
    negative = x.lt(0)
    xn = x * negative
    relu = x - xn
    return negative, relu, relu - xn


def relu_magnitude(x: Any) -> tuple[Any, Any]:
    """(ReLU(x), |x|) from one ReLU: |x| = 2 ReLU(x) - x exactly. With comparisons: fss
    the ReLU is one round (a DCF that carries x beside the sign), where the sign and
    its product take two; with the circuits it is the same sign and product."""
    relu = x.relu()
    return relu, fixed_point.times_integers(relu, 2) - x


def _table(name: str) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    # the segment breakpoints and per-segment coefficients of TABLES[name] (a generated literal)
    table = TABLES[name]
    return cast("tuple[float, ...]", table["points"]), cast("tuple[tuple[float, ...], ...]", table["coefficients"])


def _local(u: Any, name: str) -> tuple[Any, torch.Tensor]:
    # u in each segment's local variable w = (u - c) / h, on a last axis of segments
    # [..., S]; and the segments' coefficients in w, [degree + 1, S]
    points, coefficients = _table(name)
    centers = torch.tensor([(a + b) / 2 for a, b in zip(points[:-1], points[1:])])
    inverse_half = torch.tensor([2 / (b - a) for a, b in zip(points[:-1], points[1:])])
    shifted = _repeat_last(u, len(centers)) - centers
    if bool((inverse_half == inverse_half.round()).all()):  # whole factors: exact, no truncation (a round)
        w = fixed_point.times_integers(shifted, inverse_half.long())
    else:
        w = shifted * inverse_half
    return w, torch.tensor(coefficients, dtype=torch.float64).t()


def _halving(name: str) -> int | None:
    # s when every segment of TABLES[name] has the half-width 2^s (s >= 1): its local
    # variable w = (u - c) / 2^s is then left to the powers' truncations (`_segments_value`)
    points = _table(name)[0]
    halves = {(b - a) / 2 for a, b in zip(points[:-1], points[1:])}
    if len(halves) != 1:
        return None
    shift = math.log2(halves.pop())
    return int(shift) if shift >= 1 and shift == int(shift) else None


def powers(v: Any, degree: int, shift: int = 0) -> dict[int, Any]:
    """{k: w^k} for k = 1..degree (v at 1) with w = v / 2^shift, in ceil(log2(degree))
    rounds of batched products. With shift > 0 a product with a factor v (not w)
    divides by 2^shift more in its one truncation, so w itself is never truncated (one
    round fewer than computing w first)."""
    scale = 2**crypten.cfg.encoder.precision_bits
    p: dict[int, Any] = {1: v}
    k = 1
    while k < degree:
        top = min(2 * k, degree)
        lows = list(range(1, top - k + 1))
        products = fixed_point.times_unscaled(crypten.stack([p[k]] * len(lows)), crypten.stack([p[j] for j in lows]))
        if shift:
            divisors = [scale * 2 ** (shift * ((k == 1) + (j == 1))) for j in lows]
            products = products.div(torch.tensor(divisors).view(len(lows), *[1] * v.dim()))
        else:
            products = products.div(scale)
        for i, j in enumerate(lows):
            p[k + j] = products[i]
        k = top
    return p


def _segments_value(u: Any, name: str) -> Any:
    # every segment's polynomial at u, on a last axis of segments: [..., S]
    # sum_k c_k w^k as one exact weighted sum and a single truncation: each power times
    # its coefficient rounded to the fixed-point grid, added up at twice the scale
    # (CrypTen would truncate every term: one round each with comparisons: fss)
    scale = 2**crypten.cfg.encoder.precision_bits
    points, coefficients = _table(name)
    degree = len(coefficients[0]) - 1
    shift = _halving(name)
    if shift is None or degree < 2:
        w, coeffs = _local(u, name)
        pw, shift = powers(w, degree), 0
    else:
        # a half-width 2^s: v = u - c exactly (w = v / 2^s is never truncated on its own);
        # the sum is taken at 2^s times twice the scale, c_1 w as c_1 v and c_k w^k
        # (k >= 2) times 2^s exactly
        centers = torch.tensor([(a + b) / 2 for a, b in zip(points[:-1], points[1:])])
        pw = powers(_repeat_last(u, len(centers)) - centers, degree, shift)
        coeffs = torch.tensor(coefficients, dtype=torch.float64).t()
        coeffs[2:] *= 2**shift
    return _block_sum(pw, coeffs, 0, degree, scale).div(scale * 2**shift) + coeffs[0].float()


def _block_sum(pw: dict[int, Any], coeffs: torch.Tensor, first: int, last: int, scale: int) -> Any:
    # sum_{i=first+1..last} c_i w^(i - first) at twice the fixed-point scale (exact: public
    # integers times shares); the constant c_first is added after the truncation
    value: Any = None
    for i in range(first + 1, last + 1):
        term = fixed_point.times_integers(pw[i - first], torch.round(coeffs[i] * scale).long())
        value = term if value is None else value + term
    return value


def _blocks_value(u: Any, name: str) -> Any:
    """Every segment's polynomial at u, [..., S], by blocks of BLOCK powers (Paterson and
    Stockmeyer, "On the number of nonscalar multiplications necessary to evaluate
    polynomials", SIAM J. Comput. 1973): p = q_0 + w^4 (q_1 + w^4 (q_2 + ...)), each q_j a
    polynomial of degree < 4 in w, which public coefficients make from w, w^2, w^3 exactly.
    Degree 10 takes 5 products of shares (w^2; w^3 and w^4; two Horner steps) where the
    powers take 9, in one round more; the top block (degree <= 2 here) is truncated with
    w^3 and w^4, and each Horner step adds the next block at twice the scale and truncates
    the sum once."""
    w, coeffs = _local(u, name)
    degree = coeffs.shape[0] - 1
    blocks = -(-(degree + 1) // BLOCK) - 1  # the Horner steps
    top = degree - blocks * BLOCK  # the top block's degree
    if blocks < 2 or top > 2:
        return _segments_value(u, name)
    scale = 2**crypten.cfg.encoder.precision_bits
    w2 = w.square()
    # w^3, w^4 (one batched product, left at twice the scale) and the top block, truncated at once
    high = fixed_point.times_unscaled(crypten.stack([w2, w2]), crypten.stack([w, w2]))
    parts = [high[0], high[1]]
    if top > 0:
        parts.append(_block_sum({1: w, 2: w2}, coeffs, blocks * BLOCK, degree, scale))
    truncated = crypten.stack(parts).div(scale)
    pw = {1: w, 2: w2, 3: truncated[0], 4: truncated[1]}
    # the value so far: the top block (public when it is only its constant)
    inner: Any = truncated[2] + coeffs[-1 - top].float() if top > 0 else coeffs[-1]
    for j in range(blocks - 1, -1, -1):
        block = _block_sum(pw, coeffs, j * BLOCK, j * BLOCK + BLOCK - 1, scale)
        if isinstance(inner, torch.Tensor):
            product = fixed_point.times_integers(pw[BLOCK], torch.round(inner * scale).long())
        else:
            product = fixed_point.times_unscaled(pw[BLOCK], inner)
        inner = (block + product).div(scale) + coeffs[j * BLOCK].float()
    return inner


@step("polynomial")
def polynomial(u: Any, name: str) -> Any:
    """The single-segment function `name` of TABLES at u (u inside its segment)."""
    return _segments_value(u, name).squeeze(-1)


@step("piecewise")
def piecewise(u: Any, name: str) -> Any:
    """The piecewise function `name` of TABLES at u >= 0; 0 past its last point."""
    points = _table(name)[0]
    value = _blocks_value(u, name)
    below = less_than(u, points[1:])  # [u < b_s] for each segment's right end
    if below.size(-1) == 1:
        indicator = below
    else:  # u in [a_s, b_s) = [u < b_s] - [u < a_s], and u >= 0 = a_0
        indicator = crypten.cat([below[..., :1], below[..., 1:] - below[..., :-1]], dim=-1)
    return (indicator * value).sum(-1)


def gelu(x: Any, approximate: str = "none") -> Any:
    """GELU(x) = ReLU(x) - d(|x|); d from the erf form or the tanh form."""
    relu, magnitude = relu_magnitude(x)
    return relu - piecewise(magnitude, "gelu_tanh" if approximate == "tanh" else "gelu_erf")


def silu(x: Any) -> Any:
    """SiLU(x) = x * sigmoid(x) = ReLU(x) - |x| sigmoid(-|x|)."""
    relu, magnitude = relu_magnitude(x)
    return relu - piecewise(magnitude, "silu")


def tanh(x: Any) -> Any:
    """tanh(x) = sign(x) (1 - d(|x|))."""
    negative, _, magnitude = split_sign(x)
    t = 1 - piecewise(magnitude, "tanh")
    return t - (t * negative) * 2


def sigmoid(x: Any) -> Any:
    """sigmoid(x) = (1 + tanh(x / 2)) / 2."""
    return tanh(x * 0.5) * 0.5 + 0.5


@step("exp")
def exp(x: Any) -> Any:
    """e^x for x <= 12 (0 below -16); inputs above 12 give e^12."""
    bits = crypten.stack([x - EXP_LOW, -x + EXP_HIGH]).lt(0)  # [x < -16], [x > 12]
    low = bits[0]
    clipped = crypten.stack([x, x - EXP_HIGH]) * bits
    z = (x - clipped[0] - clipped[1]) * (1.0 / 32)
    r = polynomial(z, "exp32")
    for _ in range(5):
        r = r * r
    return r - r * low


@step("exp")
def exp_nonpositive(y: Any) -> Any:
    """e^y for y <= 0 (the softmax after subtracting the maximum); 0 below -16."""
    low = y.lt(EXP_LOW)
    # e^(y/4) by a polynomial in y on [-16, 0] (its local variable y/8 + 1 is left to the
    # powers' truncations: `powers`), then squared twice: rounding amplified 4-fold, where e^(y/16) squared four times
    # amplified it 16-fold in four more rounds (worst error 6.6e-5 against 2.1e-4, in numpy).
    # Below -16 the polynomial is evaluated as it is (its powers wrap the ring there:
    # meaningless values) and the exact product with the 0/1 bits zeroes it: clipping y
    # first would cost one round more
    r = polynomial(y, "exp_quarter")
    for _ in range(2):
        r = r * r
    return r - r * low


@step("levels")
def _levels(x: Any, exponents: Sequence[int], base: int) -> Any:
    # one-hot of x's level: level i when base^e_i <= x < base^e_(i+1) (first and last open)
    above = 1 - less_than(x, [float(base) ** e for e in exponents[1:]])  # [x >= base^e_i], i >= 1
    if above.size(-1) == 0:
        return None
    first = 1 - above[..., :1]
    middle = above[..., :-1] - above[..., 1:]
    return crypten.cat([first, middle, above[..., -1:]], dim=-1)


@step("reduce")
def _reduce(x: Any, onehot: Any, exponents: Sequence[int], base: int) -> Any:
    # x / base^e for x's level e: each scaled copy exactly or by one truncation, then the
    # level's copy picked by the one-hot (an exact product with 0/1 bits)
    copies = _repeat_last(x, len(exponents))
    up = [base ** (-e) if e < 0 else 1 for e in exponents]
    down = [base**e if e > 0 else 1 for e in exponents]
    copies = fixed_point.times_integers(copies, up)
    if any(d > 1 for d in down):
        copies = copies.div(torch.tensor(down, dtype=torch.long))
    return (onehot * copies).sum(-1)


@step("newton")
def _newton_reciprocal(m: Any, alongside: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    # 1/m for m in [1, 2) from the start y0 = a - 15/32 m (a fit: e0 = 1 - m y0 within
    # 0.0594 of 0): 1/m = y0 / (1 - e0) = y0 (1 + e0) (1 + e0^2) up to e0^4 (1.2e-5), the
    # two Newton steps y <- y (2 - m y) written with e_(k+1) = e_k^2 (Goldschmidt's
    # division) so that e0^2 rides beside y0 e0: e0 = 1 - a m + 15/32 m^2 from one
    # opening (m^2) and one truncation (which also makes y0; the dyadic 15/32 keeps its
    # divisor below the dealer's 2^31), then y0 e0 and e0^2 in one product, y1 e1 in one
    # more; Newton's m y and y (2 - m y) took four products. The product of the pair
    # `alongside` rides in the second; returned second (None without a pair).
    scale = 2**crypten.cfg.encoder.precision_bits
    square = fixed_point.times_unscaled(m, m)  # 2^(2p) m^2
    linear = fixed_point.times_integers(m, round(32 * RECIPROCAL_START * scale))  # 2^(2p) 32 a m
    scaled = crypten.stack([fixed_point.times_integers(square, 15) - linear, fixed_point.times_integers(m, -15)])
    divisors = torch.tensor([32 * scale, 32]).view(2, *[1] * m.dim())
    e0_y0 = scaled.div(divisors)  # one truncation for both
    e0, y0 = e0_y0[0] + 1.0, e0_y0[1] + RECIPROCAL_START
    pairs = [(crypten.stack([y0, e0]), crypten.stack([e0, e0]))]
    if alongside is not None:
        pairs.append(alongside)
    products = fixed_point.products_at_once(pairs)
    y1 = y0 + products[0][0]
    y2 = y1 + y1 * products[0][1]
    return y2, products[1] if alongside is not None else None


@step("newton")
def _newton_inv_sqrt(
    m: Any,
    iterations: int = NORM_NR_ITERS,
    start: tuple[float, float] = (1.4, 0.225),
    alongside: tuple[Any, Any] | None = None,
) -> tuple[Any, Any]:
    # 1/sqrt(m) for m in [0.2, 5]: start 1.4 - 0.225 m, y <- (3 y - (m y) y^2) / 2, the
    # relative error e going to about 1.5 e^2 a step: 39% at the ends of the range to
    # 1e-4 in four steps. y^2 and m y are one batched product; (m y) y^2 stays at twice
    # the scale, where 3 y is exact, and the sum is truncated once: two openings and
    # two truncations a step (y (1.5 - (m / 2) y^2) took three of each). The product of
    # the pair `alongside` (independent of m) rides in the first step's rounds; returned
    # second (None without a pair).
    y = m * -start[1] + start[0]
    scale = 2**crypten.cfg.encoder.precision_bits
    extra = None
    for _ in range(iterations):
        pairs = [(crypten.stack([y, m]), crypten.stack([y, y]))]
        if alongside is not None and extra is None:
            pairs.append(alongside)
        products = fixed_point.products_at_once(pairs)
        (square, my), extra = products[0], products[1] if len(products) > 1 else extra
        cube = fixed_point.times_unscaled(my, square)  # m y^3 at scale^2
        y = (fixed_point.times_integers(y, 3 * scale) - cube).div(2 * scale)
    if alongside is not None and extra is None:  # no step to ride in
        extra = alongside[0] * alongside[1]
    return y, extra


@step("reciprocal")
def reciprocal_positive(x: Any, low: int = -16, high: int = 24, times: Any = None) -> Any:
    """1/x for x in [2^low, 2^high); `times` / x when given (a secret broadcasting with
    x), its product with x's binary scale riding in the rounds of the Newton steps."""
    exponents = list(range(low, high))
    onehot = _levels(x, exponents, 2)
    m = _reduce(x, onehot, exponents, 2)
    scale = fixed_point.weighted_bits(onehot, [2.0 ** (-e) for e in exponents])
    y, scaled = _newton_reciprocal(m, None if times is None else (times, scale))
    return y * (scale if scaled is None else scaled)


@step("reciprocal")
def reciprocal(x: Any) -> Any:
    """1/x for 2^-16 <= |x| < 2^24, either sign."""
    negative, _, magnitude = split_sign(x)
    r = reciprocal_positive(magnitude)
    return r - (r * negative) * 2


@step("inv_sqrt")
def inv_sqrt(x: Any, low: int = -8, high: int = 12) -> Any:
    """1/sqrt(x) for x in [4^low, 4^high)."""
    exponents = list(range(low, high))
    onehot = _levels(x, exponents, 4)
    m = _reduce(x, onehot, exponents, 4)
    return _newton_inv_sqrt(m)[0] * fixed_point.weighted_bits(onehot, [2.0 ** (-e) for e in exponents])


@step("sqrt")
def sqrt(x: Any, low: int = -8, high: int = 12) -> Any:
    """sqrt(x) for x in [4^low, 4^high) (0 gives about 0)."""
    exponents = list(range(low, high))
    onehot = _levels(x, exponents, 4)
    m = _reduce(x, onehot, exponents, 4)
    root = m * _newton_inv_sqrt(m)[0]
    return root * fixed_point.weighted_bits(onehot, [2.0**e for e in exponents])


def _row_sum(x: Any, dims: Sequence[int]) -> Any:
    for d in sorted(dims, reverse=True):
        x = x.sum(d, keepdim=True)
    return x


def _mean(x: Any, dims: Sequence[int]) -> Any:
    return _row_sum(x, dims) * (1.0 / math.prod(x.size(d) for d in dims))


def normalize(x: Any, dims: Sequence[int], eps: float, center: bool, weight: Any = None) -> Any:
    """(x - mean) / sqrt(var + eps) over `dims` (LayerNorm; RMSNorm when center=False),
    times `weight` (a secret broadcasting to x) when given.

    The row is first scaled by 2^(-l/2) for the binary magnitude 2^l of its variance
    plus eps (a scale LayerNorm ignores), so the value that is inverted lies in about
    [1, 2), where two Newton steps from a fitted linear start suffice. The weight
    multiplies the scaled row in the rounds of the first Newton step: two rounds fewer
    than multiplying the result afterwards.
    """
    c = x - _mean(x, dims) if center else x
    # the variance 2^8 times finer than the fixed point (squares truncated by 2^(p - 8),
    # the mean by an exact division), so that variances down to 2^-22 are told apart
    fine = fixed_point.times_unscaled(c, c).div(2 ** (crypten.cfg.encoder.precision_bits - NORM_FINE_BITS))
    coarse = _row_sum(fine, dims).div(math.prod(x.size(d) for d in dims))  # (var) 2^8
    exponents = list(NORM_LEVELS)
    # the level of var + eps, so that the scaled var + eps below lies in about [1, 2)
    # whatever eps (the Newton steps start there)
    onehot = _levels(coarse + eps * 2**NORM_FINE_BITS, [e + NORM_FINE_BITS for e in exponents], 2)
    scales = [2.0 ** (-e / 2) for e in exponents]
    # the scale as encoded (rounded to the grid), so that eps is scaled by exactly its square
    encoded = [round(s * 2**crypten.cfg.encoder.precision_bits) / 2**crypten.cfg.encoder.precision_bits for s in scales]
    scale = fixed_point.weighted_bits(onehot, encoded)
    scaled = c * scale
    # the mean square with one truncation: the squares' and the mean's divisions at once
    # (the scaled row is about unit variance, so the sum at twice the scale is far from the ring's edge)
    n = math.prod(x.size(d) for d in dims)
    m = _row_sum(fixed_point.times_unscaled(scaled, scaled), dims).div(n * 2**crypten.cfg.encoder.precision_bits)
    if eps * max(encoded) ** 2 * 2**crypten.cfg.encoder.precision_bits >= 0.5:
        m = m + fixed_point.weighted_bits(onehot, [eps * s * s for s in encoded])
    alongside = None if weight is None else (scaled, weight)
    y, weighted = _newton_inv_sqrt(m, NORM_SCALED_ITERS, NORM_SCALED_START, alongside)
    return (scaled if weighted is None else weighted) * y


def softmax(x: Any, dim: int) -> Any:
    """softmax along `dim`: max subtraction, exp on [-16, 0], one positive reciprocal."""
    dim = dim % x.dim()
    top = max_values(x, dim, keepdim=True)
    e = exp_nonpositive(x - top)
    total = e.sum(dim, keepdim=True)  # in [1, n]: the maximum contributes e^0
    levels = max(1, math.ceil(math.log2(x.size(dim) + 1)))
    return reciprocal_positive(total, 0, levels + 1, times=e)


def log_softmax(x: Any, dim: int) -> Any:
    """log softmax along `dim` (CrypTen's log on the sum, after max subtraction)."""
    dim = dim % x.dim()
    y = x - max_values(x, dim, keepdim=True)
    return y - exp_nonpositive(y).sum(dim, keepdim=True).log()
