"""Matrix products under homomorphic encryption, many multiply-adds per polynomial product.

The SIMD layout of smpc.twoparty.he pays one ciphertext slot per multiply-add. Here a
block of B [k_w, m_w] and a block of A [n_w, k_w] are each one polynomial, so that their
product's coefficients hold the n_w m_w inner products of the blocks: the coefficient
packing of Cheetah (Huang, Lu, Hong and Ding, "Cheetah: Lean and Fast Secure Two-Party
Deep Neural Network Inference", USENIX Security 2022, section 3.2):

    b(x) = sum B[l, j] x^(j k_w + l),   a(x) = sum A[i, l] x^(i k_w m_w + k_w - 1 - l)

with n_w k_w m_w <= N; (A B)[i, j] is the coefficient of x^(i k_w m_w + j k_w + k_w - 1)
of a(x) b(x) (the terms past x^N wrap onto the lowest k_w - 1 coefficients, which are
no output's). X encrypts its B blocks (ceil(k / k_w) ceil(m / m_w) ciphertexts a prime)
and Y returns one sum per output block (ceil(n / n_w) ceil(m / m_w)), where the SIMD
layout sends k ceil(n m / N) and returns ceil(n m / N).

The rest is he's: five plaintext primes and the CRT for Z/2^64, each output masked by
an integer 2^SIGMA times wider than its range; every other coefficient of a result (the
blocks' partial sums) is replaced by a uniform value before it goes back, then the
result is re-randomized, flooded and switched down. SEAL's Python bindings build a
plaintext only from slots or text, so a plaintext's coefficients are written into its
serialized form (SEAL 4's: 88 bytes of header and members, then the coefficients as
64-bit words), as the flooding writes a ciphertext's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import seal

from smpc.twoparty import modular
from smpc.twoparty.he import FRESH_BYTES, PRIMES, RESULT_BYTES, N, HeError, HeParty, Prime

_PLAIN_MEMBERS = 88  # a serialized plaintext's bytes before its coefficients


# a kept operand's ciphertexts (a weight mask's, in NTT form) may take this much memory
KEPT_LIMIT = 128 << 20


def plan(n: int, k: int, m: int, kept_for: int = 1) -> tuple[int, int, int]:
    """Block sizes (n_w, k_w, m_w), powers of two with n_w k_w m_w <= N, for an [n, k] by
    [k, m] product: the fewest bytes sent a product, when B's ciphertexts cross once and
    serve `kept_for` products (a weight mask's, one a batch: later batches send only
    results), within KEPT_LIMIT of kept ciphertexts."""
    candidates: list[tuple[tuple[int, float], tuple[int, int, int]]] = []
    k_w = 1
    while k_w <= N:
        m_w = 1
        while k_w * m_w <= N:
            n_w = max(1, N // (k_w * m_w))
            encrypted, results = -(-k // k_w) * -(-m // m_w), -(-n // n_w) * -(-m // m_w)
            if kept_for > 1 and PRIMES * encrypted * FRESH_BYTES <= KEPT_LIMIT:
                cost = (0, encrypted * FRESH_BYTES / kept_for + results * RESULT_BYTES)
            else:  # sent afresh every time (after every kept plan within the limit)
                cost = (int(kept_for > 1), float(encrypted * FRESH_BYTES + results * RESULT_BYTES))
            candidates.append((cost, (n_w, k_w, m_w)))
            if m_w >= m:
                break
            m_w *= 2
        if k_w >= k:
            break
        k_w *= 2
    return min(candidates)[1]


_TEMPLATES: dict[int, bytes] = {}  # per plaintext prime: a serialized plaintext's header and members


def _plaintext(prime: Prime, coefficients: np.ndarray) -> seal.Plaintext:
    # a plaintext with these coefficients (each below t), through SEAL's serialized form
    template = _TEMPLATES.get(prime.t)
    if template is None:
        template = _TEMPLATES[prime.t] = prime.encoder.encode(np.zeros(N, dtype=np.uint64)).to_bytes()[:_PLAIN_MEMBERS]
    plain = seal.Plaintext()
    plain.load_bytes(prime.context, template + np.ascontiguousarray(coefficients, dtype=np.uint64).tobytes())
    return plain


def _coefficients(plain: seal.Plaintext) -> np.ndarray:
    # a plaintext's N coefficients (SEAL leaves out the zero ones at the top)
    raw = plain.to_bytes()
    count = int(np.frombuffer(raw[_PLAIN_MEMBERS - 8 : _PLAIN_MEMBERS], dtype=np.uint64)[0])
    if count > N:
        raise RuntimeError(
            f"SEAL serialized a plaintext of {count} coefficients; this module expects its version 4 layout"
        )
    out = np.zeros(N, dtype=np.uint64)
    out[:count] = np.frombuffer(raw[_PLAIN_MEMBERS : _PLAIN_MEMBERS + 8 * count], dtype=np.uint64)
    return out


def _outputs(n_w: int, k_w: int, m_w: int) -> np.ndarray:
    # the coefficient of output (i, j) of a block: [n_w, m_w]
    return np.arange(n_w)[:, None] * k_w * m_w + np.arange(m_w)[None, :] * k_w + (k_w - 1)


def _padded(matrix: np.ndarray, rows: int, columns: int) -> np.ndarray:
    out = np.zeros((rows, columns), dtype=np.int64)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


class MatrixProducts:
    """One party's side of A B, A [n, k] with Y (plaintext), B [k, m] with X (encrypted)."""

    def __init__(self, he: HeParty) -> None:
        self.he = he

    def encrypt(self, b: np.ndarray, dims: tuple[int, int, int]) -> list[bytes]:
        """X: our B [k, m] block by block, prime-major, then (k block, m block)."""
        _, k_w, m_w = dims
        k, m = b.shape
        kb, mb = -(-k // k_w), -(-m // m_w)
        padded = _padded(b, kb * k_w, mb * m_w)
        where = (np.arange(m_w)[None, :] * k_w + np.arange(k_w)[:, None]).reshape(-1)  # B[l, j] -> j k_w + l
        out = []
        for prime in self.he.primes:
            residues = np.mod(padded, prime.t).astype(np.uint64)
            for lb in range(kb):
                for jb in range(mb):
                    coefficients = np.zeros(N, dtype=np.uint64)
                    coefficients[where] = residues[lb * k_w : (lb + 1) * k_w, jb * m_w : (jb + 1) * m_w].reshape(-1)
                    plain = _plaintext(prime, coefficients)
                    out.append(prime.encryptor.encrypt_symmetric(plain).to_string())
        return out

    def load(self, ciphertexts: list[bytes], k: int, m: int, dims: tuple[int, int, int]) -> list[list[Any]]:
        """Y: X's ciphertexts of B [k, m], checked by SEAL and in NTT form, per prime (each
        is used by every block of rows of A, and may be kept for the next batches)."""
        he = self.he
        _, k_w, m_w = dims
        kb, mb = -(-k // k_w), -(-m // m_w)
        if len(ciphertexts) != len(he.primes) * kb * mb:
            raise HeError(f"expected {len(he.primes) * kb * mb} ciphertexts, got {len(ciphertexts)}")
        loaded = []
        for p, prime in enumerate(he.primes):
            per_prime = []
            for at in range(p * kb * mb, (p + 1) * kb * mb):
                ct = he.load(prime, ciphertexts[at], f"ciphertext {at}")
                prime.evaluator.transform_to_ntt_inplace(ct)
                per_prime.append(ct)
            loaded.append(per_prime)
        return loaded

    def multiply(
        self, loaded: list[list[Any]], a: np.ndarray, m: int, dims: tuple[int, int, int]
    ) -> tuple[list[bytes], np.ndarray]:
        """Y: the masked products (one ciphertext per prime and output block) and our
        share R mod 2^64 ([n, m] int64), for X's ciphertexts of B [k, m] (`load`ed) and
        our A [n, k]."""
        he = self.he
        n_w, k_w, m_w = dims
        n, k = a.shape
        nb, kb, mb = -(-n // n_w), -(-k // k_w), -(-m // m_w)
        padded = _padded(a, nb * n_w, kb * k_w)
        # A[i, l] -> i k_w m_w + k_w - 1 - l
        where = (np.arange(n_w)[:, None] * k_w * m_w + (k_w - 1 - np.arange(k_w))[None, :]).reshape(-1)
        outputs = _outputs(n_w, k_w, m_w).reshape(-1)
        mask = he.masks(k, nb * n_w * mb * m_w).reshape(nb * n_w, mb * m_w, -1)
        out = []
        for p, prime in enumerate(he.primes):
            if prime.peer is None:
                raise RuntimeError("the other party's public keys have not been read")
            residues = np.mod(padded, prime.t).astype(np.uint64)
            # every operand in NTT form once (each is used nb or mb times): a product is
            # then pointwise, and each sum goes back from NTT form once
            evaluator = prime.evaluator
            loaded_b = loaded[p]
            level = loaded_b[0].parms_id()
            blocks_a = []
            for ib in range(nb):
                row = []
                for lb in range(kb):
                    coefficients = np.zeros(N, dtype=np.uint64)
                    coefficients[where] = residues[ib * n_w : (ib + 1) * n_w, lb * k_w : (lb + 1) * k_w].reshape(-1)
                    plain = None
                    if coefficients.any():  # SEAL refuses a product that is transparent (all zero)
                        plain = _plaintext(prime, coefficients)
                        evaluator.transform_to_ntt_inplace(plain, level)
                    row.append(plain)
                blocks_a.append(row)
            for ib in range(nb):
                for jb in range(mb):
                    total = None
                    for lb in range(kb):
                        plain = blocks_a[ib][lb]
                        if plain is not None:
                            product = evaluator.multiply_plain(loaded_b[lb * mb + jb], plain)
                            if total is None:
                                total = product
                            else:
                                evaluator.add_inplace(total, product)
                    fresh = prime.peer.encrypt_zero()  # the re-randomization
                    if total is not None:
                        evaluator.transform_from_ntt_inplace(total)
                        evaluator.add_inplace(fresh, total)
                    total = fresh
                    # every coefficient replaced: outputs by -R, the partial sums by uniform values
                    cover = modular.uniform(he.generator, N, prime.t)
                    block_mask = mask[ib * n_w : (ib + 1) * n_w, jb * m_w : (jb + 1) * m_w].reshape(-1, mask.shape[2])
                    tt = np.uint64(prime.t)
                    cover[outputs] = (tt - modular.residues(block_mask, prime.t)) % tt
                    prime.evaluator.add_plain_inplace(total, _plaintext(prime, cover))
                    out.append(he.finish(prime, total, k))
        share: np.ndarray = np.ascontiguousarray(mask[:n, :m, 0]).view(np.int64)  # R mod 2^64
        return out, share

    def decrypt(self, ciphertexts: list[bytes], n: int, m: int, dims: tuple[int, int, int]) -> np.ndarray:
        """X: our share (A B - R) mod 2^64, [n, m] int64, from Y's masked products."""
        he = self.he
        n_w, k_w, m_w = dims
        nb, mb = -(-n // n_w), -(-m // m_w)
        if len(ciphertexts) != len(he.primes) * nb * mb:
            raise HeError(f"expected {len(he.primes) * nb * mb} ciphertexts, got {len(ciphertexts)}")
        outputs = _outputs(n_w, k_w, m_w)
        residues = np.empty((len(he.primes), nb * n_w, mb * m_w), dtype=np.uint64)
        for p, prime in enumerate(he.primes):
            for ib in range(nb):
                for jb in range(mb):
                    at = (p * nb + ib) * mb + jb
                    plain = prime.decryptor.decrypt(he.load(prime, ciphertexts[at], f"ciphertext {at}"))
                    residues[p, ib * n_w : (ib + 1) * n_w, jb * m_w : (jb + 1) * m_w] = _coefficients(plain)[outputs]
        flat = residues[:, :n, :m].reshape(len(he.primes), -1)
        return he.shares_of(flat).reshape(n, m)
