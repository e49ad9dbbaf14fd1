"""Oblivious transfer between the two parties: base OTs, and their extension to millions.

Without a dealer, the two parties make correlated randomness together; oblivious
transfer is the primitive under every piece of it that is not a large matrix product
(elementwise triples, AND triples, shared bits: smpc.twoparty.triples).

- **Base OTs** (128 per direction, once per session): Chou and Orlandi's "simplest OT"
  (LATINCRYPT 2015) as random OTs (the extension needs random seeds, so no messages are
  encrypted: the seeds are the hashed Diffie-Hellman values), on edwards25519's
  prime-order group from libsodium (PyNaCl's bindings). Every point that arrives is
  checked to be canonical, on the prime-order subgroup and not of small order before it
  is used. (The `otc` package implements the same OT on ristretto255, but its
  libsodium bindings pin cffi below 2, which the pinned `cryptography` cannot use.)
- **Extension**: Ishai, Kilian, Nissim and Petrank ("Extending Oblivious Transfers
  Efficiently", CRYPTO 2003) in the form of Asharov, Lindell, Schneider and Zohner ("More
  Efficient Oblivious Transfer and Extensions for Faster Secure Computation", CCS 2013):
  the base OTs' seeds are expanded by a PRG (AES-128 in counter mode, a fresh nonce per
  batch), the receiver sends one 128-bit column entry per OT (u^j = G(k_j^0) ^ G(k_j^1) ^ r),
  and the sender's rows satisfy q_i = t_i ^ r_i s. Semi-honest security.
- **Hash**: the correlation robust H(x, i) = pi(pi(x) ^ i) ^ pi(x), pi fixed-key AES-128
  (Guo, Katz, Wang and Yu, "Efficient and Secure Multiparty Computation from Fixed-Key
  Block Ciphers", IEEE S&P 2020, the TCCR hash), with a tweak i unique to every OT of a
  session and direction.

The classes here hold state and compute; they never touch the network. The base OT's
three messages and the extension's one are bytes the caller moves (smpc.twoparty.link),
so the same code runs over gloo, the TLS mesh, or a test's hand-built peer.
"""

from __future__ import annotations

import hashlib
import secrets

import nacl.bindings
import nacl.exceptions
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KAPPA = 128  # base OTs per direction: the computational security parameter
SEED_BYTES = KAPPA // 8
POINT_BYTES = 32  # a point of edwards25519
HASH_CHUNK = 1 << 14  # rows per pass of the hash
# pi: a public, fixed AES key (the hash's security rests on AES as a random
# permutation): SHA-256("smpc ot tccr")[:16]
_FIXED_KEY = bytes.fromhex("3f1b5b0e8d0b7c0f4a6e9f2a1c5d7e93")
_PI = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()


class OtError(ValueError):
    """A message of the other party that the protocol cannot take (wrong size, or not a
    group element); the caller names the party and the step."""


# -- base OTs -------------------------------------------------------------------


def _scalar() -> bytes:
    # a uniform scalar mod the group order (64 random bytes reduced: no bias)
    return bytes(nacl.bindings.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64)))


def _point(raw: bytes, what: str) -> bytes:
    # a point from the wire: canonical, on the prime-order subgroup, not of small order
    # (libsodium's crypto_core_ed25519_is_valid_point checks all three)
    if len(raw) != POINT_BYTES or not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise OtError(f"{what} is not a valid point of the group")
    return raw


def _seed(index: int, a_point: bytes, b_point: bytes, shared: bytes) -> np.ndarray:
    # the key of one base OT: a hash of the transcript and the Diffie-Hellman value
    digest = hashlib.sha256(b"smpc base ot" + index.to_bytes(4, "little") + a_point + b_point + shared).digest()
    return np.frombuffer(digest[:SEED_BYTES], dtype=np.uint8)


class BaseSender:
    """The base OTs' sender (the extension's receiver): ends with a pair of random seeds
    per OT, of which the receiver knows one. Messages: `public()` to the receiver, then
    `finish(queries)` on its answer."""

    def __init__(self, count: int = KAPPA) -> None:
        self.count = count
        self._secret = _scalar()
        self._public = bytes(nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(self._secret))
        self.seeds = np.empty((count, 2, SEED_BYTES), dtype=np.uint8)  # [count, 2, 16], set by finish

    def public(self) -> bytes:
        """The first message: A = aG."""
        return self._public

    def finish(self, queries: bytes) -> None:
        """From the receiver's points B_i: the seeds H(aB_i) and H(a(B_i - A))."""
        if len(queries) != self.count * POINT_BYTES:
            raise OtError(f"expected {self.count} base-OT points of {POINT_BYTES} bytes, got {len(queries)} bytes")
        for i in range(self.count):
            b_point = _point(queries[i * POINT_BYTES : (i + 1) * POINT_BYTES], f"base-OT point {i}")
            for choice, target in enumerate((b_point, _sub(b_point, self._public, i))):
                shared = nacl.bindings.crypto_scalarmult_ed25519_noclamp(self._secret, target)
                self.seeds[i, choice] = _seed(i, self._public, b_point, shared)


def _sub(b_point: bytes, a_point: bytes, i: int) -> bytes:
    # B - A; a receiver that sent B = A (so that B - A is the identity) broke the protocol
    try:
        return bytes(nacl.bindings.crypto_core_ed25519_sub(b_point, a_point))
    except nacl.exceptions.RuntimeError:
        raise OtError(f"base-OT point {i} is the sender's own point") from None


class BaseReceiver:
    """The base OTs' receiver (the extension's sender): learns the seed of its choice in
    each pair. Messages: the sender's public A -> `query(A)` -> the sender."""

    def __init__(self, choices: np.ndarray) -> None:
        self.choices = choices.astype(np.uint8)
        self._secrets = [_scalar() for _ in range(len(choices))]
        self.seeds = np.empty((len(choices), SEED_BYTES), dtype=np.uint8)

    def query(self, public: bytes) -> bytes:
        """The second message: B_i = b_i G (choice 0) or A + b_i G (choice 1); the chosen
        seeds H(b_i A) are ready after it."""
        a_point = _point(public, "the base-OT sender's point")
        out = bytearray()
        for i, (b, c) in enumerate(zip(self._secrets, self.choices)):
            b_point = bytes(nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(b))
            if c:
                b_point = bytes(nacl.bindings.crypto_core_ed25519_add(a_point, b_point))
            try:
                shared = nacl.bindings.crypto_scalarmult_ed25519_noclamp(b, a_point)
            except nacl.exceptions.RuntimeError:  # b A the identity: cannot happen for a valid A
                raise OtError("the base-OT sender's point has small order") from None
            self.seeds[i] = _seed(i, a_point, b_point, shared)
            out += b_point
        return bytes(out)


# -- the extension -----------------------------------------------------------


def _expand(seed: np.ndarray, batch: int, nbytes: int) -> np.ndarray:
    # G(seed) for one batch: AES-128-CTR keyed by the seed, the batch number as the nonce
    stream = Cipher(algorithms.AES(seed.tobytes()), modes.CTR(batch.to_bytes(8, "little") + bytes(8))).encryptor()
    return np.frombuffer(stream.update(bytes(nbytes)), dtype=np.uint8)


def _transpose(columns: np.ndarray) -> np.ndarray:
    # [KAPPA, m / 8] bit columns -> [m, KAPPA / 8] rows (bit i of column j = bit j of row i)
    from smpc.twoparty import ot_kernels

    rows = np.empty((columns.shape[1] * 8, SEED_BYTES), dtype=np.uint8)
    ot_kernels.transpose(columns, rows)
    return rows


def warm() -> None:
    """Load the compiled transpose now (numba's cache: about a second the first time in a
    process), so that the setup pays it, not the first batch."""
    _transpose(np.zeros((KAPPA, 1), dtype=np.uint8))


def tccr(rows: np.ndarray, first: int, direction: int, xor: np.ndarray | None = None) -> np.ndarray:
    """H(x_i, i) = pi(pi(x_i) ^ i) ^ pi(x_i) for rows x_i ([m, 16] uint8), or x_i ^ xor,
    i = (first + row, direction) as the 128-bit tweak. Returns [m, 2] int64 (the hash's
    128 bits)."""
    m = rows.shape[0]
    out = np.empty((m, 2), dtype=np.int64)
    # in passes of HASH_CHUNK rows through buffers made once: they stay in the cache
    step = min(m, HASH_CHUNK)
    once = np.empty(16 * step + 16, dtype=np.uint8)
    twice = np.empty(16 * step + 16, dtype=np.uint8)
    tweaked = np.empty((step, 2), dtype=np.int64)
    offsets = np.arange(step, dtype=np.int64)
    masked = np.empty((step, SEED_BYTES), dtype=np.uint8)
    for lo in range(0, m, step):
        k = min(step, m - lo)
        x = rows[lo : lo + k] if xor is None else np.bitwise_xor(rows[lo : lo + k], xor, out=masked[:k])
        _PI.update_into(np.ascontiguousarray(x).reshape(-1), once)  # type: ignore[arg-type]
        first_pass = once[: 16 * k].view(np.int64).reshape(k, 2)
        np.bitwise_xor(first_pass[:, 0], offsets[:k] + (first + lo), out=tweaked[:k, 0])
        np.bitwise_xor(first_pass[:, 1], direction, out=tweaked[:k, 1])
        _PI.update_into(tweaked[:k].reshape(-1).view(np.uint8), twice)  # type: ignore[arg-type]
        np.bitwise_xor(twice[: 16 * k].view(np.int64).reshape(k, 2), first_pass, out=out[lo : lo + k])
    return out


def _bytes_of(bits: np.ndarray) -> np.ndarray:
    # [m] 0/1 -> [m / 8] packed bytes (bit i of the vector is bit i % 8 of byte i // 8)
    return np.packbits(bits.astype(np.uint8), bitorder="little")


class ExtensionReceiver:
    """The extension's receiver (the base OTs' sender): chooses one of two messages per OT.

    `setup` runs the base OTs (as their sender); then every `columns(choices)` makes the
    one message of a batch (to the sender) and returns this side's hashes H(t_i, i).
    """

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.base = BaseSender(KAPPA)
        self._batch = 0
        self._used = 0  # OTs so far: the tweaks never repeat

    def columns(self, choices: np.ndarray) -> tuple[bytes, np.ndarray]:
        """For choice bits r ([m] 0/1, m a multiple of 8): (u, H(t_i, i)), u the message to
        the sender ([KAPPA, m / 8] bytes) and the hashes [m, 2] int64."""
        m = len(choices)
        if m % 8:
            raise ValueError(f"expected a multiple of 8 OTs, got {m}")
        r = _bytes_of(choices)
        t = np.empty((KAPPA, m // 8), dtype=np.uint8)
        u = np.empty((KAPPA, m // 8), dtype=np.uint8)
        for j in range(KAPPA):
            t[j] = _expand(self.base.seeds[j, 0], self._batch, m // 8)
            u[j] = t[j] ^ _expand(self.base.seeds[j, 1], self._batch, m // 8) ^ r
        hashes = tccr(_transpose(t), self._used, self.direction)
        self._batch += 1
        self._used += m
        return u.tobytes(), hashes


class ExtensionSender:
    """The extension's sender (the base OTs' receiver, with secret choices s): for every
    OT, two random messages H(q_i, i) and H(q_i ^ s, i), of which the receiver has one."""

    def __init__(self, direction: int) -> None:
        self.direction = direction
        self.s = np.frombuffer(secrets.token_bytes(KAPPA // 8), dtype=np.uint8)
        self.base = BaseReceiver(np.unpackbits(self.s, bitorder="little"))
        self._batch = 0
        self._used = 0

    def rows(self, u: bytes, m: int) -> tuple[np.ndarray, np.ndarray]:
        """From the receiver's message of a batch of m OTs: (H(q_i, i), H(q_i ^ s, i)),
        each [m, 2] int64 (after the base OTs' `query`)."""
        if m % 8 or len(u) != KAPPA * m // 8:
            raise OtError(f"expected an extension message of {KAPPA * m // 8} bytes for {m} OTs, got {len(u)}")
        columns = np.frombuffer(u, dtype=np.uint8).reshape(KAPPA, m // 8)
        q = np.empty((KAPPA, m // 8), dtype=np.uint8)
        choices = self.base.choices
        for j in range(KAPPA):
            q[j] = _expand(self.base.seeds[j], self._batch, m // 8)
            if choices[j]:
                q[j] ^= columns[j]
        rows = _transpose(q)
        zero = tccr(rows, self._used, self.direction)
        one = tccr(rows, self._used, self.direction, xor=self.s)
        self._batch += 1
        self._used += m
        return zero, one
