"""The cryptographically secure generator behind every share, mask and tuple.

AES-256 in counter mode (the `cryptography` package: OpenSSL, with the CPU's AES
instructions) keyed with 256 bits: the keystream is the random stream, read in whole
tensors (8 bytes per ring element). Its state is a key and a position, so two parties
that share a key draw the same values in the same order, and nothing about the key
follows from any number of outputs (unlike torch.Generator's Mersenne Twister, whose
state follows from 624 outputs). AES-CTR as a PRG: NIST SP 800-90A's CTR_DRBG without
its reseeding, the construction MP-SPDZ and EMP use for the same purpose.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
_CHUNK = 1 << 22  # bytes of keystream per call into OpenSSL
_ZEROS = memoryview(bytes(_CHUNK))  # CTR mode: the keystream is the encryption of zeros
_SPARE = 15  # update_into wants block size - 1 bytes of room after the output
_drawn = 0  # bytes drawn in this process, by every generator (a run's figure)


def bytes_drawn() -> int:
    """Random bytes this process has drawn so far."""
    return _drawn


def derive(key: bytes, *labels: Any) -> bytes:
    """A 256-bit key for a sub-stream of `key` named by `labels` (SHA-256; one-way)."""
    h = hashlib.sha256(key)
    for label in labels:
        h.update(b"\x00" + str(label).encode())
    return h.digest()


class AesCtrGenerator:
    """A random stream keyed by 256 bits, drawn as int64 tensors.

    Stands in for torch.Generator wherever CrypTen or smpc draw a secret
    (smpc.compat routes CrypTen's two random helpers here); `reseed` takes a key (or,
    in tests, an int).
    """

    def __init__(self, key: bytes | None = None, device: Any = "cpu") -> None:
        self.device = torch.device(device)
        self.reseed(secrets.token_bytes(KEY_BYTES) if key is None else key)

    def reseed(self, seed: bytes | int) -> AesCtrGenerator:
        """Restart the stream at a new key (an int is widened to a key by SHA-256)."""
        if isinstance(seed, int):
            seed = hashlib.sha256(seed.to_bytes(16, "little", signed=True)).digest()
        if len(seed) != KEY_BYTES:
            raise ValueError(f"expected a key of {KEY_BYTES} bytes, got {len(seed)}")
        self.key = bytes(seed)
        self._stream = Cipher(algorithms.AES(self.key), modes.CTR(bytes(16))).encryptor()
        return self

    def random_bytes(self, n: int) -> bytes:
        """The next `n` bytes of the stream."""
        out = np.empty(n + _SPARE, dtype=np.uint8)
        self._fill(out, n)
        return out[:n].tobytes()

    def _fill(self, out: np.ndarray, n: int) -> None:
        # the keystream straight into `out` (n bytes and _SPARE more): no copies
        global _drawn
        _drawn += n
        for start in range(0, n, _CHUNK):
            k = min(_CHUNK, n - start)
            # numpy arrays are buffers; its stubs say so only for Python >= 3.12
            self._stream.update_into(_ZEROS[:k], out[start : start + k + _SPARE])  # type: ignore[arg-type]

    def ring(self, size: Any) -> torch.Tensor:
        """Uniform elements of the ring Z/2^64 as int64, of shape `size`."""
        shape = tuple(torch.Size(size))
        count = math.prod(shape)  # 1 for a 0-d tensor
        out = torch.empty(count + 2, dtype=torch.int64)  # 16 spare bytes for update_into
        self._fill(out.numpy().view(np.uint8), 8 * count)
        return out[:count].reshape(shape)

    def bits(self, size: Any, bitlength: int) -> torch.Tensor:
        """Uniform integers in [0, 2^bitlength) as int64 (1 <= bitlength <= 63)."""
        if not 1 <= bitlength <= 63:
            raise ValueError(f"expected 1..63 bits, got {bitlength}")
        return self.ring(size) & ((1 << bitlength) - 1)


def ring_element(size: Any, ring_size: int = 2**64, generator: Any = None, **kwargs: Any) -> torch.Tensor:
    """CrypTen's `generate_random_ring_element`, drawn from an AesCtrGenerator (the
    party's own `local` one when no generator is given)."""
    if ring_size != 2**64:
        raise ValueError(f"only the ring of 2^64 elements is supported, got {ring_size}")
    return _generator(generator, kwargs).ring(size)


def kbit_tensor(size: Any, bitlength: int | None = None, generator: Any = None, **kwargs: Any) -> torch.Tensor:
    """CrypTen's `generate_kbit_random_tensor`, drawn from an AesCtrGenerator."""
    g = _generator(generator, kwargs)
    return g.ring(size) if bitlength in (None, 64) else g.bits(size, bitlength)


def _generator(generator: Any, kwargs: dict[str, Any]) -> AesCtrGenerator:
    if generator is None:
        import crypten

        device = kwargs.get("device") or "cpu"
        generator = crypten.generators["local"][torch.device(device)]
    if not isinstance(generator, AesCtrGenerator):  # never fall back to a predictable stream
        raise TypeError(f"expected an AesCtrGenerator, got {type(generator).__name__}")
    return generator
