"""Matrix triples made by the two parties alone: C = A B for shared A [n, k] and B [k, m].

C = A0 B0 + A1 B1 + A0 B1 + A1 B0: each party computes its own product, and each cross
term is one homomorphic sum of products (smpc.twoparty.he) with one party encrypting
and the other multiplying. Both run at once, symmetrically: each party encrypts its B
(term l of output (i, j) is B[l, j]) and multiplies the other's ciphertexts by its A
(A[i, l]), so a triple costs two exchanges after the session's exchange of public keys.
One slot per output element and one ciphertext per term: n m / 8192 ciphertexts for
each of the k terms and each plaintext prime (the packing of Cheetah, Huang et al.,
USENIX Security 2022, which needs no replication across n, is the next step).
"""

from __future__ import annotations

import numpy as np
import torch

from smpc.protocols.csprng import AesCtrGenerator
from smpc.twoparty.he import PRIMES, HeError, HeParty, N
from smpc.twoparty.link import Link


def _frames(raw: bytes, size: int, count: int) -> list[bytes]:
    return [raw[i * size : (i + 1) * size] for i in range(count)]


class MatrixTriples:
    """One party's side of the matrix triples; `setup()` exchanges the public keys."""

    def __init__(self, link: Link, generator: AesCtrGenerator | None = None) -> None:
        self.link = link
        self.generator = generator or AesCtrGenerator()
        self.he = HeParty(self.generator)
        # serialized sizes are fixed by the parameters: both sides know every message's length
        probe = self.he.encrypt(np.zeros((1, 1), dtype=np.int64))
        self._fresh = len(probe[0])
        self._key = len(self.he.public_keys()[0])

    def setup(self) -> None:
        """Send our public keys, read the other's (one exchange)."""
        theirs = self.link.exchange(b"".join(self.he.public_keys()), PRIMES * self._key)
        try:
            self.he.peer_keys(_frames(theirs, self._key, PRIMES))
        except HeError as problem:
            raise self.link.refused("public keys", problem) from None

    def cross(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Our share ([n, m] int64) of A_ours B_theirs + A_theirs B_ours, for our a [n, k]
        and b [k, m] (the other party holds the same shapes)."""
        n, k = a.shape
        m = b.shape[1]
        slots = n * m
        blocks = -(-slots // N)
        terms_x = np.tile(b, (1, n))  # [k, n m]: term l of (i, j) is b[l, j]
        terms_y = np.repeat(np.ascontiguousarray(a.T), m, axis=1)  # [k, n m]: a[i, l]
        ours = self.he.encrypt(terms_x)
        count = len(ours)
        if any(len(c) != self._fresh for c in ours):
            raise RuntimeError("SEAL serialized a fresh ciphertext in an unexpected size")
        theirs = self.link.exchange(b"".join(ours), count * self._fresh)
        try:
            back, mask_share = self.he.multiply(_frames(theirs, self._fresh, count), terms_y)
        except HeError as problem:
            raise self.link.refused("matrix products", problem) from None
        size = len(back[0])
        if any(len(c) != size for c in back):
            raise RuntimeError("SEAL serialized a result in an unexpected size")
        returned = self.link.exchange(b"".join(back), PRIMES * blocks * size)
        try:
            decrypted = self.he.decrypt(_frames(returned, size, PRIMES * blocks), slots)
        except HeError as problem:
            raise self.link.refused("matrix products' results", problem) from None
        shares: np.ndarray = (decrypted + mask_share).reshape(n, m)
        return shares

    def matmul_triples(self, n: int, k: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This party's shares of a triple (A [n, k], B [k, m], C = A B), int64."""
        a = self.generator.ring((n, k))
        b = self.generator.ring((k, m))
        cross = torch.from_numpy(self.cross(a.numpy(), b.numpy()))
        return a, b, a @ b + cross
