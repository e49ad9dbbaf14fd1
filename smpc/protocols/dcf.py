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
vectorized over the elements: each tree level is one AES call over a whole tensor of
seeds (the breadth-first walk NssMPClib uses), never a Python loop per element; the
elements are processed in chunks that stay in the CPU's cache.

Seeds are [N, 2] int64 (128 bits; the lowest bit of word 0 is the control bit, so a
seed carries 127 random bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# A public, fixed AES key (the PRG's security rests on AES as a random permutation,
# not on this key being secret): SHA-256("smpc dcf prg")[:16].
_FIXED_KEY = bytes.fromhex("ba84f9a54f8e827ea379828bad40bf7d")
_ENCRYPTOR = Cipher(algorithms.AES(_FIXED_KEY), modes.ECB()).encryptor()
# tweaks T_i (xored into word 1): the seed and control bit of the left and right
# children, their values, and the final conversion of a leaf seed to the output group
_T = {("s", 0): 1, ("s", 1): 2, ("v", 0): 3, ("v", 1): 4, "final": 5}
CHUNK = 1 << 14  # elements per pass: a level's working set stays in cache
_LOW_BIT_CLEAR = ~1


def _aes_mmo(blocks: torch.Tensor) -> torch.Tensor:
    """AES_K(x) ^ x for every 128-bit row of an [..., 2] int64 tensor."""
    flat = blocks.contiguous().view(-1, 2)
    out = torch.empty(flat.shape[0] * 2 + 2, dtype=torch.int64)  # 16 spare bytes for update_into
    _ENCRYPTOR.update_into(flat.numpy().view(np.uint8).reshape(-1), out.numpy().view(np.uint8))
    return (out[: flat.shape[0] * 2].view(-1, 2) ^ flat).view(blocks.shape)


def _tweaks(*values: int) -> torch.Tensor:
    # [len(values), 2] blocks with T_i in word 1: xored into a seed, they make G_i's input
    out = torch.zeros(len(values), 2, dtype=torch.int64)
    out[:, 1] = torch.tensor(values, dtype=torch.int64)
    return out


def _pick(mask: torch.Tensor, if_set: torch.Tensor, if_clear: torch.Tensor) -> torch.Tensor:
    # bitwise select by an all-ones / all-zeros int64 mask (cheaper than torch.where)
    return if_clear ^ ((if_set ^ if_clear) & mask)


_CLEAR_T = torch.tensor([_LOW_BIT_CLEAR, -1], dtype=torch.int64)  # drops a block's control bit
_GEN_TWEAKS = _tweaks(_T[("s", 0)], _T[("s", 1)], _T[("v", 0)], _T[("v", 1)]).view(4, 1, 1, 2)
_FINAL_TWEAK = _tweaks(_T["final"])[0]


@dataclass(frozen=True)
class DcfKeys:
    """The correction words both keys share, for N comparisons over n bits with k outputs.

    s_cw [n, N, 2], v_cw [n, N, k], t_cw [2, N] (bit i of row 0/1: level i's left/right
    control-bit CW), final [N, k]. With a party's root seed [N, 2] they make its key.
    """

    bits: int
    s_cw: torch.Tensor
    v_cw: torch.Tensor
    t_cw: torch.Tensor
    final: torch.Tensor

    @staticmethod
    def size(count: int, bits: int, k: int) -> int:
        """int64 words of the correction words of `count` comparisons."""
        return count * (2 * bits + bits * k + 2 + k)

    def pack(self) -> torch.Tensor:
        """One flat int64 tensor (the order `unpack` reads)."""
        return torch.cat([self.s_cw.reshape(-1), self.v_cw.reshape(-1), self.t_cw.reshape(-1), self.final.reshape(-1)])

    @classmethod
    def unpack(cls, flat: torch.Tensor, count: int, bits: int, k: int) -> "DcfKeys":
        """The inverse of `pack`; ValueError when `flat` has the wrong length."""
        if flat.dtype != torch.int64 or flat.numel() != cls.size(count, bits, k):
            raise ValueError(f"expected {cls.size(count, bits, k)} int64 words of DCF keys, got {flat.numel()} ({flat.dtype})")
        sizes = [bits * count * 2, bits * count * k, 2 * count, count * k]
        s_cw, v_cw, t_cw, final = torch.split(flat.reshape(-1), sizes)
        return cls(bits, s_cw.view(bits, count, 2), v_cw.view(bits, count, k), t_cw.view(2, count), final.view(count, k))


def _bit(x: torch.Tensor, position: int) -> torch.Tensor:
    return (x >> position) & 1


def gen(alpha: torch.Tensor, beta: torch.Tensor, roots: tuple[torch.Tensor, torch.Tensor], bits: int) -> DcfKeys:
    """Correction words for f(x) = beta if x < alpha else 0, x and alpha in [0, 2^bits).

    Args:
        alpha: [N] int64, the secret thresholds (unsigned, `bits` wide; bits <= 63).
        beta: [N, k] int64, the payload (ring elements).
        roots: the two parties' root seeds, [N, 2] int64 each (drawn from their streams).
        bits: the input width n.

    Returns:
        The shared correction words; party b's key is (roots[b], these).
    """
    if not 1 <= bits <= 63:
        raise ValueError(f"expected 1..63 input bits, got {bits}")
    n, k = alpha.numel(), beta.shape[1]
    s_cw = torch.empty(bits, n, 2, dtype=torch.int64)
    v_cw = torch.empty(bits, n, k, dtype=torch.int64)
    t_cw = torch.zeros(2, n, dtype=torch.int64)
    final = torch.empty(n, k, dtype=torch.int64)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        _gen_chunk(alpha[lo:hi], beta[lo:hi], roots[0][lo:hi], roots[1][lo:hi], bits,
                   s_cw[:, lo:hi], v_cw[:, lo:hi], t_cw[:, lo:hi], final[lo:hi])
    return DcfKeys(bits, s_cw, v_cw, t_cw, final)


def _gen_chunk(alpha, beta, root0, root1, bits, s_cw, v_cw, t_cw, final) -> None:
    n, k = alpha.numel(), beta.shape[1]
    seeds = torch.stack([root0, root1]) & _CLEAR_T  # [2, n, 2]
    t = torch.tensor([[0], [1]], dtype=torch.int64).expand(2, n)  # t_b^(0) = b
    v_alpha = torch.zeros(n, k, dtype=torch.int64)
    for level in range(bits):
        a = _bit(alpha, bits - 1 - level)  # [n]
        right = -a  # all ones where alpha's bit is 1: keep the right child, lose the left
        # both parties' seeds expanded to (s, t) and v of both children: [4, 2, n, 2]
        s_l, s_r, v_l, v_r = _aes_mmo(seeds.unsqueeze(0) ^ _GEN_TWEAKS)
        t_l, t_r = s_l[..., 0] & 1, s_r[..., 0] & 1  # [2, n]
        s_l, s_r = s_l & _CLEAR_T, s_r & _CLEAR_T
        v_l, v_r = v_l[..., :k], v_r[..., :k]  # [2, n, k]
        s_lose = _pick(right.view(1, n, 1), s_l, s_r)
        s_keep = s_l ^ s_r ^ s_lose
        v_lose = _pick(right.view(1, n, 1), v_l, v_r)
        v_keep = v_l ^ v_r ^ v_lose
        sign = (1 - 2 * t[1]).view(n, 1)  # (-1)^{t_1}
        cw_s = s_lose[0] ^ s_lose[1]
        # going right, every x of the left subtree (bit 0 < alpha's bit 1) is below alpha
        cw_v = sign * (v_lose[1] - v_lose[0] - v_alpha + (beta & right.view(n, 1)))
        v_alpha = v_alpha - v_keep[1] + v_keep[0] + sign * cw_v
        cw_tl = t_l[0] ^ t_l[1] ^ a ^ 1
        cw_tr = t_r[0] ^ t_r[1] ^ a
        s_cw[level], v_cw[level] = cw_s, cw_v
        t_cw[0] |= cw_tl << level
        t_cw[1] |= cw_tr << level
        t_keep = _pick(right, t_r, t_l)  # [2, n]
        cw_t_keep = _pick(right, cw_tr, cw_tl)  # [n]
        seeds = s_keep ^ (cw_s.unsqueeze(0) & -t.unsqueeze(-1))  # t_b selects the correction
        t = t_keep ^ (t & cw_t_keep)
    leaf = _aes_mmo(seeds ^ _FINAL_TWEAK)[..., :k]  # [2, n, k]
    final.copy_((1 - 2 * t[1]).view(n, 1) * (leaf[1] - leaf[0] - v_alpha))


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
    n, k = x.numel(), keys.final.shape[1]
    out = torch.empty(n, k, dtype=torch.int64)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        out[lo:hi] = _eval_chunk(party, root[lo:hi], keys, lo, hi, x[lo:hi])
    return out


def _eval_chunk(party, root, keys, lo, hi, x) -> torch.Tensor:
    n, k, bits = x.numel(), keys.final.shape[1], keys.bits
    seed = root & _CLEAR_T
    t = torch.full((n,), party, dtype=torch.int64)
    value = torch.zeros(n, k, dtype=torch.int64)
    t_cw = keys.t_cw[:, lo:hi]
    for level in range(bits):
        xb = _bit(x, bits - 1 - level)
        # only the child x's bit selects: its (s, t) and its value, tweaks by that bit
        blocks = seed.unsqueeze(0).repeat(2, 1, 1)
        blocks[0, :, 1] ^= _T[("s", 0)] + xb
        blocks[1, :, 1] ^= _T[("v", 0)] + xb
        child, v = _aes_mmo(blocks)
        v = v[:, :k]
        mask = -t.view(n, 1)
        value += v + (keys.v_cw[level, lo:hi] & mask)
        cw_t = _bit(_pick(-xb, t_cw[1], t_cw[0]), level)
        seed = (child & _CLEAR_T) ^ (keys.s_cw[level, lo:hi] & mask)
        t = (child[:, 0] & 1) ^ (t & cw_t)
    leaf = _aes_mmo(seed ^ _FINAL_TWEAK)[:, :k]
    value += leaf + (keys.final[lo:hi] & -t.view(n, 1))
    return value if party == 0 else -value
