"""Triples of products made by the two parties alone: C = op(A, B) for shared A and B,
op a matrix product, a convolution or an elementwise product (smpc.twoparty.bilinear).

C = op(A0, B0) + op(A1, B1) + op(A0, B1) + op(A1, B0): each party computes its own
product, and each cross term is computed under homomorphic encryption with one party
encrypting and the other multiplying. Both run at once, symmetrically: each party
encrypts its B and multiplies the other's ciphertexts by its A, so a product costs two
exchanges after the session's exchange of public keys (one when B is a weight's mask
whose ciphertexts crossed already). Matrix products and convolutions
(as im2col matrices) go in Cheetah's coefficient packing (smpc.twoparty.packing: many
multiply-adds per polynomial product); elementwise products one per SIMD slot
(smpc.twoparty.he).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np
import torch

from smpc.protocols.csprng import AesCtrGenerator
from smpc.twoparty import bilinear, packing
from smpc.twoparty.he import FRESH_BYTES, PRIMES, RESULT_BYTES, HeError, HeParty, N
from smpc.twoparty.link import Link


T = TypeVar("T")


def _frames(raw: bytes, size: int, count: int) -> list[bytes]:
    return [raw[i * size : (i + 1) * size] for i in range(count)]


class MatrixTriples:
    """One party's side of the matrix triples; `setup()` exchanges the public keys."""

    def __init__(self, link: Link, generator: AesCtrGenerator | None = None) -> None:
        self.link = link
        self.generator = generator or AesCtrGenerator()
        self.he = HeParty(self.generator)
        self.packed = packing.MatrixProducts(self.he)
        # serialized sizes are fixed by the parameters: both sides know every message's length
        if len(self.he.encrypt(np.zeros((1, 1), dtype=np.int64))[0]) != FRESH_BYTES:
            raise RuntimeError("SEAL serializes a fresh ciphertext in another size than smpc.twoparty.he expects")
        self._key = len(self.he.public_keys()[0])
        # the other party's ciphertexts of its fixed operands (cross's `fixed`), in NTT form
        self._kept: dict[Hashable, list[list[Any]]] = {}

    def setup(self) -> None:
        """Send our public keys, read the other's (one exchange)."""
        theirs = self.link.exchange(b"".join(self.he.public_keys()), PRIMES * self._key)
        try:
            self.he.peer_keys(_frames(theirs, self._key, PRIMES))
        except HeError as problem:
            raise self.link.refused("public keys", problem) from None

    def forget_kept(self) -> None:
        """Drop the other party's kept ciphertexts (when no more products with them come)."""
        self._kept.clear()

    def cross(self, a: np.ndarray, b: np.ndarray, fixed: Hashable | None = None, uses: int = 1) -> np.ndarray:
        """Our share ([n, m] int64) of A_ours B_theirs + A_theirs B_ours, for our a [n, k]
        and b [k, m] (the other party holds the same shapes), in Cheetah's packing: we
        encrypt our b's blocks and multiply the other's by our a's.

        `fixed` names a b that stays the same for the session (a share of a weight's
        mask): its ciphertexts cross once, and later products with it send only results
        (both parties make the same requests in the same order, so both know); `uses`
        is how many products it will serve (packing.plan's `kept_for`)."""
        n, k = a.shape
        m = b.shape[1]
        dims = packing.plan(n, k, m, kept_for=uses if fixed is not None else 1)
        key = None if fixed is None else (fixed, k, m, dims)
        loaded = self._kept.get(key) if key is not None else None
        if loaded is None:
            ours = self.packed.encrypt(b, dims)
            loaded = self._swap(ours, FRESH_BYTES, "matrix products", lambda t: self.packed.load(t, k, m, dims))
            if key is not None:
                self._kept[key] = loaded
        back, mask_share = self.packed.multiply(loaded, a, m, dims)
        decrypted = self._swap(
            back, RESULT_BYTES, "matrix products' results", lambda t: self.packed.decrypt(t, n, m, dims)
        )
        shares: np.ndarray = decrypted + mask_share
        return shares

    def _swap(self, ours: list[bytes], size: int, step: str, take: Callable[[list[bytes]], T]) -> T:
        # our ciphertexts for the other's as many of `size` bytes each (the two sides' shapes
        # are the same), given to `take`; what it cannot take is the other party's fault
        theirs = self.link.exchange(b"".join(ours), len(ours) * size)
        try:
            return take(_frames(theirs, size, len(ours)))
        except HeError as problem:
            raise self.link.refused(step, problem) from None

    def cross_terms(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Our share ([S] int64) of sum_l y_ours x_theirs + y_theirs x_ours, for our terms
        y and x ([L, S] int64 each; the other party's have the same shape): we encrypt our
        x and multiply the other's ciphertexts by our y."""
        slots = x.shape[1]
        ours = self.he.encrypt(np.ascontiguousarray(x))
        if any(len(c) != FRESH_BYTES for c in ours):
            raise RuntimeError("SEAL serialized a fresh ciphertext in an unexpected size")
        y = np.ascontiguousarray(y)
        back, mask_share = self._swap(ours, FRESH_BYTES, "matrix products", lambda t: self.he.multiply(t, y))
        size = len(back[0])
        if any(len(c) != size for c in back) or len(back) != PRIMES * -(-slots // N):  # a prime a block
            raise RuntimeError("SEAL serialized a result in an unexpected size")
        decrypted = self._swap(back, size, "matrix products' results", lambda t: self.he.decrypt(t, slots))
        shares: np.ndarray = decrypted + mask_share
        return shares

    def products(
        self,
        op: str,
        a: torch.Tensor,
        b: torch.Tensor,
        kwargs: dict[str, Any],
        fixed: Hashable | None = None,
        uses: int = 1,
    ) -> torch.Tensor:
        """Our share of op(A, B) for A = a_0 + a_1, B = b_0 + b_1 (ours a, b): our own
        product plus our share of the cross terms (elementwise products slot by slot,
        matrix products and convolutions in Cheetah's packing). `fixed` names a B that
        stays the same for the session, for `uses` products (cross's)."""
        if op == "mul":
            y, x, shape = bilinear.terms(op, a, b, kwargs)
            cross = torch.from_numpy(self.cross_terms(y.numpy(), x.numpy())).view(shape)
            own: torch.Tensor = (y * x).sum(0).view(shape)
            return own + cross
        pairs, assemble = bilinear.matrices(op, a, b, kwargs)
        outs = []
        for i, (left, right) in enumerate(pairs):
            left, right = left.contiguous(), right.contiguous()
            kept = None if fixed is None else (fixed, op, i)
            outs.append(left @ right + torch.from_numpy(self.cross(left.numpy(), right.numpy(), kept, uses)))
        return assemble(outs)

    def triple(self, op: str, size0: torch.Size, size1: torch.Size, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """This party's shares of a triple (a, b, c = op(a, b)) of the given sizes."""
        a, b = self.generator.ring(size0), self.generator.ring(size1)
        return a, b, self.products(op, a, b, kwargs)

    def matmul_triples(self, n: int, k: int, m: int) -> tuple[torch.Tensor, ...]:
        """This party's shares of a triple (A [n, k], B [k, m], C = A B), int64."""
        return self.triple("matmul", torch.Size((n, k)), torch.Size((k, m)), {})
