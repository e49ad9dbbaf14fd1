"""Distributed comparison functions (DCF): two keys that add up to [x < alpha] * beta.

The construction is Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar and Rathee, "Function
Secret Sharing for Mixed-Mode and Fixed-Point Secure Computation", EUROCRYPT 2021
(eprint 2020/1392), Fig. 1: a binary tree over the n input bits, walked from the top
bit; at each level a key holds one seed correction word (CW), two control-bit CWs and
one CW in the output group, which here is (Z/2^64)^k (k = 1 or 2 payload elements).
Party b's evaluation at any x gives V_b with V_0 + V_1 = beta if x < alpha else 0,
and a key alone says nothing of alpha or beta.

The PRG is fixed-key AES-128 in the tweakable Matyas-Meyer-Oseas mode,
G_i(s) = AES_K(s ^ T_i) ^ s ^ T_i (Guo, Katz, Wang and Yu, "Efficient and Secure
Multiparty Computation from Fixed-Key Block Ciphers", IEEE S&P 2020), from the
`cryptography` package (OpenSSL: the CPU's AES instructions). Everything is
vectorized over the elements: each tree level is one AES call over a whole chunk of
seeds (the breadth-first walk NssMPClib uses), then one compiled pass over the chunk
(smpc.protocols.dcf_kernels: the xors, selections and correction words of the level),
never Python per element; chunks stay in the CPU's cache.

Seeds are [N, 2] int64 (128 bits; the lowest bit of word 0 is the control bit, so a
seed carries 127 random bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# A public, fixed AES key (the PRG's security rests on AES as a random permutation,
# not on this key being secret): SHA-256("smpc dcf prg")[:16].
_FIXED_KEY = bytes.fromhex("ba84f9a54f8e827ea379828bad40bf7d")
_ENCRYPTOR = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()
CHUNK = 1 << 13  # elements per pass: a level's working set stays in cache


@dataclass(frozen=True)
class DcfKeys:
    """The correction words both keys share, for `count` comparisons over `bits` bits with
    `k` outputs, in one flat int64 tensor (`words`, what travels):

        s_cw [bits, count, 2] | v_cw [bits, count, k] | t_cw [2, count] | final [count, k]

    (t_cw: bit i of row 0/1 is level i's left/right control-bit CW). With a party's root
    seeds [count, 2] they make its key.
    """

    bits: int
    count: int
    k: int
    words: torch.Tensor

    @staticmethod
    def size(count: int, bits: int, k: int) -> int:
        """int64 words of the correction words of `count` comparisons."""
        return count * (2 * bits + bits * k + 2 + k)

    def _parts(self) -> tuple[torch.Tensor, ...]:
        n, bits, k = self.count, self.bits, self.k
        s_cw, v_cw, t_cw, final = torch.split(self.words, [bits * n * 2, bits * n * k, 2 * n, n * k])
        return s_cw.view(bits, n, 2), v_cw.view(bits, n, k), t_cw.view(2, n), final.view(n, k)

    @property
    def s_cw(self) -> torch.Tensor:
        return self._parts()[0]

    def pack(self) -> torch.Tensor:
        """The flat words (no copy)."""
        return self.words

    @classmethod
    def unpack(cls, flat: torch.Tensor, count: int, bits: int, k: int) -> DcfKeys:
        """The keys in `flat` (no copy); ValueError when it has the wrong length."""
        if flat.dtype != torch.int64 or flat.numel() != cls.size(count, bits, k):
            raise ValueError(
                f"expected {cls.size(count, bits, k)} int64 words of DCF keys, got {flat.numel()} ({flat.dtype})"
            )
        return cls(bits, count, k, flat.reshape(-1))


def gen(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    roots: tuple[torch.Tensor, torch.Tensor],
    bits: int,
    out: torch.Tensor | None = None,
) -> DcfKeys:
    """Correction words for f(x) = beta if x < alpha else 0, x and alpha in [0, 2^bits).

    Args:
        alpha: [N] int64, the secret thresholds (unsigned, `bits` wide; bits <= 63).
        beta: [N, k] int64, the payload (ring elements).
        roots: the two parties' root seeds, [N, 2] int64 each (drawn from their streams).
        bits: the input width n.
        out: where to write the words (a flat int64 tensor of DcfKeys.size(N, bits, k)
            elements), so that the caller can send them with more in one buffer.

    Returns:
        The shared correction words; party b's key is (roots[b], these).
    """
    if not 1 <= bits <= 63:
        raise ValueError(f"expected 1..63 input bits, got {bits}")
    _load_kernels()
    n, k = alpha.numel(), beta.shape[1]
    keys = DcfKeys(bits, n, k, torch.empty(DcfKeys.size(n, bits, k), dtype=torch.int64) if out is None else out)
    s_cw, v_cw, t_cw, final = (part.numpy() for part in keys._parts())
    t_cw[:] = 0
    alpha_, beta_ = alpha.contiguous().numpy(), beta.contiguous().numpy()
    roots_ = np.stack([roots[0].contiguous().numpy(), roots[1].contiguous().numpy()])
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        m = hi - lo
        blocks = np.empty((m, 4, 2, 2), dtype=np.int64)  # the AES input: element x tweak x party x word
        aes_out = np.empty(4 * 2 * m * 2 + 2, dtype=np.int64)
        t = np.empty((2, m), dtype=np.int64)
        v_alpha = np.zeros((m, k), dtype=np.int64)
        _kernels.gen_start(roots_[:, lo:hi], blocks, t)
        for level in range(bits):
            _aes(blocks, aes_out)
            _kernels.gen_level(
                blocks,
                aes_out,
                alpha_[lo:hi],
                beta_[lo:hi],
                bits - 1 - level,
                level,
                t,
                v_alpha,
                s_cw[level, lo:hi],
                v_cw[level, lo:hi],
                t_cw[:, lo:hi],
                level + 1 == bits,
            )
        leaves = np.ascontiguousarray(blocks[:, 0])  # the leaves' conversion to the output group
        _aes(leaves, aes_out)
        _kernels.gen_final(leaves, aes_out, t, v_alpha, final[lo:hi])
    return keys


def eval_(party: int, root: torch.Tensor, keys: DcfKeys, x: torch.Tensor) -> torch.Tensor:
    """Party `party`'s share of [x < alpha] * beta at every public x.

    Args:
        party: 0 or 1.
        root: this party's root seeds, [N, 2] int64.
        keys: the correction words.
        x: [N] int64, the public inputs (in [0, 2^bits)).

    Returns:
        [N, k] int64: this party's additive shares.
    """
    _load_kernels()
    n, bits, k = x.numel(), keys.bits, keys.k
    value = np.zeros((n, k), dtype=np.int64)
    x_, root_ = x.contiguous().numpy(), root.contiguous().numpy()
    s_cw, v_cw, t_cw, final = (part.numpy() for part in keys._parts())
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        m = hi - lo
        blocks = np.empty((m, 2, 2), dtype=np.int64)  # the AES input: (s, t) and v of the child x's bit picks
        out = np.empty(2 * m * 2 + 2, dtype=np.int64)
        t = np.full(m, party, dtype=np.int64)
        _kernels.eval_start(root_[lo:hi], x_[lo:hi], bits - 1, blocks)
        for level in range(bits):
            _aes(blocks, out)
            _kernels.eval_level(
                blocks,
                out,
                x_[lo:hi],
                bits - 1 - level,
                level,
                t,
                value[lo:hi],
                s_cw[level, lo:hi],
                v_cw[level, lo:hi],
                t_cw[:, lo:hi],
                level + 1 == bits,
            )
        leaves = np.ascontiguousarray(blocks[:, 0])
        _aes(leaves, out)
        _kernels.eval_final(leaves, out, t, final[lo:hi], value[lo:hi])
    out_ = torch.from_numpy(value)
    return out_ if party == 0 else -out_


def _aes(blocks: np.ndarray, out: np.ndarray) -> None:
    # AES_K of every 128-bit row of `blocks` into `out` (the MMO xor is the kernels')
    # numpy arrays are buffers; its stubs say so only for Python >= 3.12
    _ENCRYPTOR.update_into(blocks.reshape(-1).view(np.uint8), out.view(np.uint8))  # type: ignore[arg-type]


_kernels: Any = None  # smpc.protocols.dcf_kernels, compiled on first use
_warm = False


def _load_kernels() -> None:
    global _kernels
    if _kernels is None:
        from smpc.protocols import dcf_kernels

        _kernels = dcf_kernels


def warm() -> None:
    """Load the compiled kernels now (numba's cache: about a second, the first time in a
    process), so that it is paid when fss is put in place, before a session's online
    phase, not by its first comparison. Two chunks of both payload widths load every
    specialization the real calls use (a chunk's slices are strided, a last chunk of
    one element is contiguous)."""
    global _warm
    if _warm:
        return
    n = CHUNK + 1
    zeros = torch.zeros(n, dtype=torch.int64)
    roots = (torch.zeros(n, 2, dtype=torch.int64), torch.ones(n, 2, dtype=torch.int64))
    for k in (1, 2):
        keys = gen(zeros, torch.zeros(n, k, dtype=torch.int64), roots, 2)
        eval_(0, roots[0], keys, zeros)
    _warm = True
