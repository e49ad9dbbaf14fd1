"""Correlated randomness from a trusted dealer: what each party draws, what the dealer sends.

The dealer shares one 256-bit key with each party (an AES-256-CTR stream, see
smpc.protocols.csprng). For every request (a Beaver triple,
a square pair, a binary triple, wrap counts, B2A bits), party i draws its shares from
its own seed; the dealer, holding all seeds, draws the same values, reconstructs the
secret (e.g. a and b), computes the derived value (c = a op b), and sends party 0
alone the correction that makes the shares add up. An FSS gate's keys
(smpc.protocols.fss) are made the same way: each party draws its mask and DCF root
seeds, and the dealer sends both parties the correction words (party 0 also its
corrections). Nothing else reaches a party from the dealer, and every item is tagged
for its party, batch and position (`Binding`).

Both sides call `draw` with the same arguments, so their PRG streams stay in step.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any, cast
from collections.abc import Callable, Iterable

import blake3
import numpy as np
import torch
from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from crypten.common.util import count_wraps

from smpc.protocols import fixed, fss
from smpc.protocols.csprng import AesCtrGenerator, derive
from smpc.protocols.ring_matmul import FixedMatrix

# The products a Beaver triple can be for (CrypTen's beaver protocol asserts the same set).
PRODUCTS: dict[str, Callable[..., torch.Tensor]] = {
    "mul": torch.mul,
    "matmul": torch.matmul,
    "conv1d": torch.conv1d,
    "conv2d": torch.conv2d,
    "conv_transpose1d": torch.conv_transpose1d,
    "conv_transpose2d": torch.conv_transpose2d,
}
KINDS = ("additive", "square", "binary", "wraps", "B2A", "fixed")


class FixedMasks:
    """At the dealer: the session mask B of every fixed operand (smpc.protocols.fixed),
    the sum of the shares each party derives from the key it shares with the dealer."""

    def __init__(self, seeds: list[bytes]) -> None:
        self.seeds = seeds
        self._masks: dict[str, torch.Tensor] = {}
        self._matrices: dict[tuple[str, bool], FixedMatrix] = {}  # B as a matmul operand, kept

    def mask(self, name: str, shape: torch.Size) -> torch.Tensor:
        held = self._masks.get(name)
        if held is None or held.shape != shape:
            held = self._masks[name] = _total(fixed.mask_share(s, name, shape) for s in self.seeds)
            self._matrices = {key: m for key, m in self._matrices.items() if key[0] != name}
        return held

    def product(
        self, op: str, a: torch.Tensor, name: str, shape: torch.Size, transposed: bool, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """C = A op B for the session mask B of weight `name`."""
        b = self.mask(name, shape)
        if op != "matmul":
            return fixed.PRODUCTS[op](a, fixed.operand(b, transposed), **kwargs)
        if (name, transposed) not in self._matrices:
            self._matrices[(name, transposed)] = FixedMatrix(fixed.operand(b, transposed).contiguous())
        return self._matrices[(name, transposed)].rmatmul(a)


def product_size(op: str, size0: torch.Size, size1: torch.Size, kwargs: dict[str, Any]) -> torch.Size:
    """Shape of `a op b` (no arithmetic)."""
    return _product_size(op, tuple(size0), tuple(size1), _hashable(kwargs))


@functools.lru_cache(maxsize=4096)  # every batch repeats the same requests
def _product_size(op: str, size0: tuple[int, ...], size1: tuple[int, ...], kwargs: tuple[Any, ...]) -> torch.Size:
    # every product by its rule: torch's meta kernels (and torch.broadcast_shapes) import
    # its compiler stack (sympy) on first use, about 0.5 s that landed in the online time of
    # a party's first product (the convolution's too); meta tensors only for what the
    # rules do not cover (a padding given by name)
    if op == "mul":
        return torch.Size(_broadcast(size0, size1))
    if op == "matmul":
        return torch.Size(_matmul_shape(size0, size1))
    shape = _conv_shape(op, size0, size1, dict(kwargs))
    if shape is not None:
        return torch.Size(shape)
    a = torch.empty(size0, device="meta")
    b = torch.empty(size1, device="meta")
    return PRODUCTS[op](a, b, **dict(kwargs)).shape


def _conv_shape(op: str, x: tuple[int, ...], w: tuple[int, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    # torch's output-size rules for a batched convolution (and its transpose); None where
    # they do not apply (then the meta kernel decides, and raises for what does not fit)
    transposed = op.startswith("conv_transpose")
    dims = 2 if op.endswith("2d") else 1
    options = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1} | ({"output_padding": 0} if transposed else {})
    if set(kwargs) - set(options) or len(x) != dims + 2 or len(w) != dims + 2:
        return None
    values = options | kwargs
    per_dim = {}
    for name in ("stride", "padding", "dilation") + (("output_padding",) if transposed else ()):
        v = values[name]
        v = (v,) * dims if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else None
        if v is None or len(v) != dims or not all(isinstance(i, int) for i in v):
            return None  # e.g. padding="same"
        per_dim[name] = v
    groups = values["groups"]
    if not isinstance(groups, int) or groups < 1:
        return None
    channels = w[1] * groups if transposed else w[0]
    if x[1] != (w[0] if transposed else w[1] * groups):
        return None
    out = []
    for i in range(dims):
        s, p, d, k, n = per_dim["stride"][i], per_dim["padding"][i], per_dim["dilation"][i], w[2 + i], x[2 + i]
        if transposed:
            size = (n - 1) * s - 2 * p + d * (k - 1) + per_dim["output_padding"][i] + 1
        else:
            size = (n + 2 * p - d * (k - 1) - 1) // s + 1
        if size < 1:
            return None
        out.append(size)
    return (x[0], channels, *out)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError(f"shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    # torch.matmul's rules: a vector is a row (left) or a column (right), dropped after
    if not a or not b:
        raise ValueError("matmul needs at least one dimension on each side")
    row, column = len(a) == 1, len(b) == 1
    a, b = (1,) + a if row else a, b + (1,) if column else b
    if a[-1] != b[-2]:
        raise ValueError(f"matmul of shapes {list(a)} and {list(b)}")
    out = _broadcast(a[:-2], b[:-2]) + (a[-2], b[-1])
    out = out[:-1] if column else out
    return (out[:-1] if column else out[:-2] + out[-1:]) if row else out


def request_tag(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """16-byte digest naming a request, so party 0 can check it uses the right correction."""
    return _tag(kind, tuple(tuple(a) if isinstance(a, torch.Size) else a for a in args), _hashable(kwargs))


def _hashable(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


@functools.lru_cache(maxsize=4096)
def _tag(kind: str, args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> bytes:
    return hashlib.sha256(f"{kind}|{args}|{kwargs}".encode()).digest()[:16]


def spec(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[torch.Size, int]]:
    """Shapes and bit lengths of one request's shares, in draw order (64 = ring element)."""
    if kind == "additive":
        size0, size1, op = args
        return [(size0, 64), (size1, 64), (product_size(op, size0, size1, kwargs), 64)]
    if kind in ("square", "wraps"):
        return [(args[0], 64), (args[0], 64)]
    if kind == "binary":
        size0, size1 = args
        return [(size0, 64), (size1, 64), (torch.Size(_broadcast(tuple(size0), tuple(size1))), 64)]
    if kind == "B2A":
        return [(args[0], 1), (args[0], 64)]
    if kind == "fixed":  # A, then C = A op B (B: the session's mask of the weight)
        op, x_size, _, w_size, transposed = args
        operand = torch.Size(reversed(w_size)) if transposed else w_size
        return [(x_size, 64), (product_size(op, x_size, operand, kwargs), 64)]
    raise ValueError(f"unknown request kind {kind!r}")


def draw(
    kind: str, generator: AesCtrGenerator, rank: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[torch.Tensor]:
    """The shares party `rank` draws for one request, in order; party 0 omits the last
    one (its value comes from the dealer's correction)."""
    wanted = spec(kind, args, kwargs)
    if rank == 0:
        wanted = wanted[:-1]
    return [generator.ring(size) if bits == 64 else generator.bits(size, bits) for size, bits in wanted]


def receivers(kind: str) -> tuple[int, ...]:
    """The ranks the dealer sends something for a request of `kind`: party 0's
    correction, or (FSS keys) both parties' correction words."""
    return (0, 1) if kind in fss.DCF_KINDS else (0,)


def material(
    kind: str,
    generators: list[AesCtrGenerator],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    masks: FixedMasks | None = None,
) -> dict[int, torch.Tensor]:
    """At the dealer: what each receiving party gets for one request, by rank (`masks`:
    the session's masks of the fixed operands, for a `fixed` request)."""
    if kind in fss.KINDS:
        return fss.dealer_material(kind, generators, args)
    return {0: correction(kind, generators, args, kwargs, masks)}


def correction(
    kind: str,
    generators: list[AesCtrGenerator],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    masks: FixedMasks | None = None,
) -> torch.Tensor:
    """At the dealer: draw every party's shares and return party 0's missing share."""
    shares = [draw(kind, g, rank, args, kwargs) for rank, g in enumerate(generators)]
    others = shares[1:]
    if kind == "fixed":
        if masks is None:
            raise ValueError("a fixed-operand product needs the session's masks")
        op, _, name, w_size, transposed = args
        a = _total(s[0] for s in shares)
        return masks.product(op, a, name, w_size, transposed, kwargs) - _total(s[1] for s in others)
    if kind == "additive":
        a = _total(s[0] for s in shares)
        b = _total(s[1] for s in shares)
        return PRODUCTS[args[2]](a, b, **kwargs) - _total(s[2] for s in others)
    if kind == "square":
        r = _total(s[0] for s in shares)
        return r * r - _total(s[1] for s in others)
    if kind == "binary":
        a = _xor_all([s[0] for s in shares])
        b = _xor_all([s[1] for s in shares])
        return (a & b) ^ _xor_all([s[2] for s in others])
    if kind == "wraps":
        wraps: torch.Tensor = count_wraps([s[0] for s in shares])
        return wraps - _total(s[1] for s in others)
    if kind == "B2A":
        bit = _xor_all([s[0] for s in shares])
        return bit - _total(s[1] for s in others)
    raise ValueError(f"unknown request kind {kind!r}")


def _total(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    # sum() of the tensors, as it was (start 0 included); never empty here: every party
    # draws each share, and a session has parties and their seeds
    return cast(torch.Tensor, sum(tensors))


def _xor_all(tensors: list[torch.Tensor]) -> torch.Tensor:
    out = tensors[0].clone()
    for t in tensors[1:]:
        out ^= t
    return out


def seeded(seed: bytes | int) -> AesCtrGenerator:
    """The stream of `seed`: the 256-bit key a party shares with the dealer (an int only
    in tests)."""
    return AesCtrGenerator(seed) if isinstance(seed, bytes) else AesCtrGenerator().reseed(seed)


def batch_seed(seed: bytes, bucket: Any, index: int) -> bytes:
    """The key of a service's `index`-th batch of a shape bucket (smpc.model.buckets),
    derived from a party's key: the dealer prepares batches of several shapes ahead, in
    any order, and each
    party's stream for a batch depends only on which batch it is."""
    return derive(seed, "batch", bucket.rows, bucket.seq, index)


class Binding:
    """Tags that bind each MATERIAL item to one party's dealer key, its batch, its position
    in the batch and its bytes, so that an item replayed from another batch or run, or
    changed on the way, is refused by name. Keyed BLAKE3 (a MAC) under keys derived from
    the party's dealer key, which only the dealer and that party know: the first 8 bytes
    of a tag say where the item belongs, the last 8 what it holds (over where and the body)."""

    def __init__(self, seed: bytes) -> None:
        self._where_key = derive(seed, "material tag: where")
        self._what_key = derive(seed, "material tag: what")

    def where(self, request: bytes, batch: str, position: int) -> bytes:
        """The first half of a tag: the request's digest, the batch's label, the position."""
        return blake3.blake3(request + f"|{batch}|{position}".encode(), key=self._where_key).digest(8)

    def what(self, where: bytes, body: torch.Tensor) -> bytes:
        """The second half of a tag: a MAC of the first half and the item's bytes."""
        h = blake3.blake3(where, key=self._what_key)
        # numpy arrays are buffers (its stubs say so only for Python >= 3.12); 0-d items too
        h.update(body.detach().contiguous().reshape(-1).numpy().view(np.uint8))  # type: ignore[arg-type]
        return h.digest(8)

    def tag(self, request: bytes, batch: str, position: int, body: torch.Tensor) -> bytes:
        """The dealer's tag of one item."""
        where = self.where(request, batch, position)
        return where + self.what(where, body)

    def check(self, tag: bytes, request: bytes, batch: str, position: int, what: bytes) -> str | None:
        """None when `tag` is this item's (`what`: the reader's MAC of the received tag's
        first half and body), else what differed."""
        if not hmac.compare_digest(tag[:8], self.where(request, batch, position)):
            return (
                "made for another request, batch or run (a replayed key, or the dealer traced a different computation)"
            )
        if not hmac.compare_digest(tag[8:], what):
            return "its bytes differ from what the dealer made (corrupted or truncated on the way)"
        return None
