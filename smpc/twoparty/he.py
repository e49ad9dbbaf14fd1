"""Sums of products in Z/2^64 between the two parties, by lattice homomorphic encryption.

The volume of a model's correlated randomness is in its matrix products (a matmul triple
of n x k by k x m needs n k m products of one party's share with the other's), where
oblivious transfer costs about 1.5 KB per product: far too much. Here one party (X)
encrypts its values under its own key, the other (Y) multiplies them by its own values
and adds them up under encryption, masks the result and sends it back; X decrypts its
share. This is the homomorphic-encryption triple generation of Rathee, Schneider and
Shukla ("Improved multiplication triple generation over rings via RLWE-based AHE",
CANS 2019), in the SIMD form of SecureML's LHE triples (Mohassel and Zhang, S&P 2017):
one slot per output, one ciphertext per term of the sum.

- **Scheme**: BFV from Microsoft SEAL (`seal-python`), N = 8192 and SEAL's default
  coefficient modulus for it (218 bits: 128-bit security by the HomomorphicEncryption.org
  standard), ternary secret keys.
- **Exact in Z/2^64** although no library offers a plaintext space of 2^64: every sum
  z = sum_l x_l y_l of signed 64-bit values is an integer below L 2^126 in magnitude; it is
  computed modulo PRIMES batching primes of PRIME_BITS bits each (their product T >
  2^190), masked by Y with an integer R uniform in [0, 2^(126 + log2 L + SIGMA)), and
  X reconstructs z - R exactly as an integer by the CRT; the shares are z - R and R mod
  2^64. z - R is within 2^-SIGMA (statistical distance) of a value independent of z.
- **Circuit privacy**: before it goes back, Y's result is re-randomized with a fresh
  public-key encryption of zero (so its second polynomial is no longer a combination of
  X's), and its first polynomial gets a flooding noise uniform in [-2^F, 2^F] with F =
  SIGMA bits above the bound of the noise the products left, so the noise X decrypts says
  nothing of Y's values (statistical distance 2^-SIGMA per coefficient bound). It is then
  switched down to the two lowest primes of the modulus (a smaller message; the
  switch is public post-processing).

SEAL's Python bindings give no access to a ciphertext's polynomials, so the flooding is
added to the ciphertext's serialized form (SEAL 4's format, uncompressed: a header, the
ciphertext's members, then its polynomials as RNS limbs of N 64-bit words each); a test
checks that a flooded ciphertext decrypts to the same value and that the offsets here
match the library's. Every ciphertext and key that arrives is loaded by SEAL with its
validation against the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import seal

from smpc.protocols.csprng import AesCtrGenerator
from smpc.twoparty import modular

N = 8192  # slots per ciphertext
PRIME_BITS = 40
PRIMES = 5  # plaintext primes: T > 2^195
SIGMA = 40  # statistical security, bits
KEEP_PRIMES = 2  # the coefficient primes a result keeps on its way back
MASK_WORDS = 3  # a mask R fits in 192 bits
_MEMBERS = 16 + 32 + 1 + 5 * 8 + 16 + 8  # the serialized ciphertext's bytes before its polynomials
_DATA_PRIMES = 4  # SEAL's default modulus for N = 8192: four data primes and the special one
FRESH_BYTES = _MEMBERS + 2 * _DATA_PRIMES * N * 8  # a fresh ciphertext, serialized
RESULT_BYTES = _MEMBERS + 2 * KEEP_PRIMES * N * 8  # a result on its way back
_FRESH_NOISE_BITS = 5  # a fresh encryption's noise: below 6 sigma = 19.2 < 2^5 per coefficient


class HeError(ValueError):
    """A ciphertext or key of the other party that SEAL refuses, or of the wrong size."""


def _parameters(plain: seal.Modulus) -> seal.EncryptionParameters:
    parms = seal.EncryptionParameters(seal.scheme_type.bfv)
    parms.set_poly_modulus_degree(N)
    parms.set_coeff_modulus(seal.CoeffModulus.BFVDefault(N))
    parms.set_plain_modulus(plain)
    return parms


@dataclass
class Prime:
    """One plaintext prime's context and this party's tools in it."""

    t: int
    context: seal.SEALContext
    encoder: seal.BatchEncoder
    evaluator: seal.Evaluator
    secret: seal.SecretKey
    public: seal.PublicKey
    encryptor: seal.Encryptor  # symmetric, under our own secret key
    decryptor: seal.Decryptor
    q: list[int]  # the data level's coefficient primes
    peer: seal.Encryptor | None = None  # under the other party's public key


class HeParty:
    """This party's keys in every plaintext prime's context, and the other's public keys
    once `peer_keys` has read them."""

    def __init__(self, generator: AesCtrGenerator | None = None) -> None:
        self.generator = generator or AesCtrGenerator()
        self.primes: list[Prime] = []
        for plain in seal.PlainModulus.Batching(N, [PRIME_BITS] * PRIMES):
            context = seal.SEALContext(_parameters(plain))
            keys = seal.KeyGenerator(context)
            secret, public = keys.secret_key(), keys.create_public_key()
            q = [m.value() for m in context.first_context_data().parms().coeff_modulus()]
            self.primes.append(
                Prime(
                    t=plain.value(),
                    context=context,
                    encoder=seal.BatchEncoder(context),
                    evaluator=seal.Evaluator(context),
                    secret=secret,
                    public=public,
                    encryptor=seal.Encryptor(context, secret),
                    decryptor=seal.Decryptor(context, secret),
                    q=q,
                )
            )
        self.modulus = math.prod(p.t for p in self.primes)
        self.crt = modular.Crt([p.t for p in self.primes])

    # -- keys ----------------------------------------------------------------

    def public_keys(self) -> list[bytes]:
        """Our public key in each prime's context, serialized."""
        return [p.public.to_string() for p in self.primes]

    def peer_keys(self, keys: list[bytes]) -> None:
        """The other party's public keys (loaded and validated by SEAL)."""
        if len(keys) != len(self.primes):
            raise HeError(f"expected {len(self.primes)} public keys, got {len(keys)}")
        for i, (prime, raw) in enumerate(zip(self.primes, keys)):
            try:
                key = prime.context.from_public_str(raw)
            except Exception as error:  # SEAL's own validation: a key that does not fit
                raise HeError(f"public key {i} is not valid for the parameters: {error}") from None
            prime.peer = seal.Encryptor(prime.context, key)

    # -- X: encrypt our terms ------------------------------------------------

    def encrypt(self, x: np.ndarray) -> list[bytes]:
        """Our terms x ([L, S] int64; a last block of fewer than N slots is padded with
        zeros) as ciphertexts, ordered prime-major, then term, then block of N slots."""
        terms, slots = x.shape
        out = []
        for prime in self.primes:
            residues = np.mod(x, prime.t).astype(np.uint64)  # numpy's mod of int64 is non-negative
            for row in residues:
                for lo in range(0, slots, N):
                    block = np.zeros(N, dtype=np.uint64)
                    block[: min(N, slots - lo)] = row[lo : lo + N]
                    out.append(prime.encryptor.encrypt_symmetric(prime.encoder.encode(block)).to_string())
        return out

    # -- Y: multiply, add, mask, flood -----------------------------------------

    def multiply(self, ciphertexts: list[bytes], y: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        """For X's ciphertexts of x ([L, S]) and our y ([L, S] int64): the masked sums
        z - R (ciphertexts to send back, one per prime and block) and our share R mod 2^64
        ([S] int64)."""
        terms, slots = y.shape
        blocks = -(-slots // N)
        if len(ciphertexts) != len(self.primes) * terms * blocks:
            raise HeError(f"expected {len(self.primes) * terms * blocks} ciphertexts, got {len(ciphertexts)}")
        mask = self.masks(terms, slots)
        out = []
        at = 0
        for prime in self.primes:
            if prime.peer is None:
                raise RuntimeError("the other party's public keys have not been read")
            residues = np.mod(y, prime.t).astype(np.uint64)
            mask_residues = (np.uint64(prime.t) - modular.residues(mask, prime.t)) % np.uint64(prime.t)
            sums = [prime.peer.encrypt_zero() for _ in range(blocks)]  # re-randomized from the start
            for term in range(terms):
                for b in range(blocks):
                    ct = self.load(prime, ciphertexts[at], f"ciphertext {at}")
                    at += 1
                    block = np.zeros(N, dtype=np.uint64)
                    block[: min(N, slots - b * N)] = residues[term, b * N : (b + 1) * N]
                    if block.any():  # SEAL refuses a product that is transparent (all zero)
                        prime.evaluator.add_inplace(
                            sums[b], prime.evaluator.multiply_plain(ct, prime.encoder.encode(block))
                        )
            for b in range(blocks):
                block = np.zeros(N, dtype=np.uint64)
                block[: min(N, slots - b * N)] = mask_residues[b * N : (b + 1) * N]
                prime.evaluator.add_plain_inplace(sums[b], prime.encoder.encode(block))
                out.append(self.finish(prime, sums[b], terms))
        share: np.ndarray = mask[:, 0].view(np.int64)  # R mod 2^64
        return out, share

    def masks(self, terms: int, slots: int) -> np.ndarray:
        """Y's masks R, one per output of a sum of `terms` products: [slots, 3] uint64
        words of each integer, the lowest first."""
        # R uniform over 2^SIGMA times the range of z (|z| <= L 2^126, a range below
        # 2^(127 + bitlen(L - 1)))
        bits = 127 + max(1, terms - 1).bit_length() + SIGMA
        if bits + 2 > self.modulus.bit_length() or bits > 64 * MASK_WORDS:
            raise ValueError(f"a sum of {terms} terms does not fit the plaintext primes")
        words: np.ndarray = self.generator.ring((slots, MASK_WORDS)).numpy().view(np.uint64).copy()
        words[:, -1] &= np.uint64((1 << (bits - 64 * (MASK_WORDS - 1))) - 1)
        return words

    def finish(self, prime: Prime, ct: seal.Ciphertext, terms: int) -> bytes:
        """Y's masked sum of `terms` products, flooded and switched down, serialized."""
        # flood the noise, then switch down to KEEP_PRIMES primes: what goes back to X.
        # X knows its own encryption noise e_l, so the products' noise sum_l e_l p_l (at
        # most L N (t / 2) 2^5, SEAL's encoding rounding included) would tell it about our
        # plaintexts p_l: the flooding is SIGMA bits wider than that bound
        noise_bits = max(1, terms).bit_length() + (N.bit_length() - 1) + prime.t.bit_length() + _FRESH_NOISE_BITS + 1
        flooded = self._flood(prime, ct.to_string(), noise_bits + SIGMA)
        ct = self.load(prime, flooded, "our own flooded ciphertext")
        for _ in range(len(prime.q) - KEEP_PRIMES):
            prime.evaluator.mod_switch_to_next_inplace(ct)
        out: bytes = ct.to_string()
        return out

    def _flood(self, prime: Prime, raw: bytes, bits: int) -> bytes:
        # add e uniform in [-2^bits, 2^bits) to every coefficient of c0, in each RNS limb
        limbs = len(prime.q)
        data = np.frombuffer(raw, dtype=np.uint8, count=8 * limbs * N, offset=_MEMBERS).view(np.uint64)
        if len(raw) != _MEMBERS + 2 * limbs * N * 8:
            raise RuntimeError(
                f"SEAL serialized a ciphertext in {len(raw)} bytes; this module expects its version 4 layout"
            )
        if bits > 126:
            raise ValueError(f"a flooding noise of {bits} bits is past this module's 127-bit draws")
        # e = (128 uniform bits >> (127 - bits)) - 2^bits: exactly uniform in [-2^bits, 2^bits)
        draws = modular.shifted(self.generator.ring((N, 2)).numpy().view(np.uint64), 127 - bits)
        c0 = data.reshape(limbs, N).copy()
        for j, q in enumerate(prime.q):
            qq = np.uint64(q)
            e = (modular.residues(draws, q) + qq - np.uint64(pow(2, bits, q))) % qq
            c0[j] = (c0[j] + e) % qq
        out = bytearray(raw)
        out[_MEMBERS : _MEMBERS + 8 * limbs * N] = c0.tobytes()
        return bytes(out)

    # -- X: decrypt our share ------------------------------------------------

    def decrypt(self, ciphertexts: list[bytes], slots: int) -> np.ndarray:
        """Our share z - R mod 2^64 ([slots] int64) from Y's masked sums."""
        blocks = -(-slots // N)
        if len(ciphertexts) != len(self.primes) * blocks:
            raise HeError(f"expected {len(self.primes) * blocks} ciphertexts, got {len(ciphertexts)}")
        residues = np.empty((len(self.primes), blocks * N), dtype=np.uint64)
        for i, prime in enumerate(self.primes):
            for b in range(blocks):
                ct = self.load(prime, ciphertexts[i * blocks + b], f"ciphertext {i * blocks + b}")
                residues[i, b * N : (b + 1) * N] = prime.encoder.decode_uint64(prime.decryptor.decrypt(ct))
        return self.shares_of(residues[:, :slots])

    def shares_of(self, residues: np.ndarray) -> np.ndarray:
        """X's shares mod 2^64 ([S] int64) of the integers z - R with these residues
        ([PRIMES, S], one row per plaintext prime): reconstructed by the CRT, centered."""
        return self.crt.signed_low_words(residues)

    @staticmethod
    def load(prime: Prime, raw: bytes, what: str) -> seal.Ciphertext:
        """A ciphertext of the other party, validated by SEAL (HeError names `what`)."""
        ct = seal.Ciphertext()
        try:
            ct.load_bytes(prime.context, raw)
        except Exception as error:  # SEAL's validation against the parameters
            raise HeError(f"{what} is not a valid ciphertext for the parameters: {error}") from None
        if ct.size() != 2:
            raise HeError(f"{what} has {ct.size()} polynomials, expected 2")
        return ct
