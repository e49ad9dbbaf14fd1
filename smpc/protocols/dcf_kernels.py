"""The DCF's per-level work, compiled (numba): one pass over the elements between two AES calls.

smpc.protocols.dcf calls AES (OpenSSL, over the whole chunk) and then one of these
kernels, which does in a single loop what would otherwise be some fifty whole-tensor
operations per level: the fixed-key MMO xor, picking the kept and lost children by the
threshold's (or input's) bit, the correction words, the control bits, and the next
level's tweaked AES inputs. Layouts: `blocks` is the AES input ([4, 2, m, 2] at key
generation: tweak x party x element x word; [2, m, 2] at evaluation: seed block and value
block of the chosen child), `out` the AES output of the same shape. Tweaks (word 1):
1/2 the left/right child's seed, 3/4 their values, 5 a leaf's output. int64 arithmetic
wraps, as the ring Z/2^64 needs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_CLEAR = -2  # ~1: drops a block's control bit
_FINAL = 5


@njit(cache=True)
def gen_start(roots, blocks, t):  # pragma: no cover - compiled
    m = roots.shape[1]
    for p in range(2):
        for i in range(m):
            s0, s1 = roots[p, i, 0] & _CLEAR, roots[p, i, 1]
            for j in range(4):
                blocks[j, p, i, 0] = s0
                blocks[j, p, i, 1] = s1 ^ (j + 1)
            t[p, i] = p


@njit(cache=True)
def gen_level(blocks, out_flat, alpha, beta, shift, level, t, v_alpha, s_cw, v_cw, t_cw, last):  # pragma: no cover
    m, k = alpha.shape[0], beta.shape[1]
    out = out_flat[: 16 * m].reshape(4, 2, m, 2)
    for i in range(m):
        a = (alpha[i] >> shift) & 1
        # both parties' children: seeds (two words each) and control bits
        l00 = out[0, 0, i, 0] ^ blocks[0, 0, i, 0]
        l01 = out[0, 0, i, 1] ^ blocks[0, 0, i, 1]
        r00 = out[1, 0, i, 0] ^ blocks[1, 0, i, 0]
        r01 = out[1, 0, i, 1] ^ blocks[1, 0, i, 1]
        l10 = out[0, 1, i, 0] ^ blocks[0, 1, i, 0]
        l11 = out[0, 1, i, 1] ^ blocks[0, 1, i, 1]
        r10 = out[1, 1, i, 0] ^ blocks[1, 1, i, 0]
        r11 = out[1, 1, i, 1] ^ blocks[1, 1, i, 1]
        tl0, tr0, tl1, tr1 = l00 & 1, r00 & 1, l10 & 1, r10 & 1
        l00 &= _CLEAR
        r00 &= _CLEAR
        l10 &= _CLEAR
        r10 &= _CLEAR
        if a == 1:  # keep the right child, lose the left
            cw0, cw1 = l00 ^ l10, l01 ^ l11
            k00, k01, k10, k11 = r00, r01, r10, r11
        else:
            cw0, cw1 = r00 ^ r10, r01 ^ r11
            k00, k01, k10, k11 = l00, l01, l10, l11
        s_cw[i, 0], s_cw[i, 1] = cw0, cw1
        sign = 1 - 2 * t[1, i]
        for j in range(k):
            vl0 = out[2, 0, i, j] ^ blocks[2, 0, i, j]
            vr0 = out[3, 0, i, j] ^ blocks[3, 0, i, j]
            vl1 = out[2, 1, i, j] ^ blocks[2, 1, i, j]
            vr1 = out[3, 1, i, j] ^ blocks[3, 1, i, j]
            if a == 1:  # every x of the left subtree is below alpha: beta goes in
                cw = sign * (vl1 - vl0 - v_alpha[i, j] + beta[i, j])
                v_alpha[i, j] = v_alpha[i, j] - vr1 + vr0 + sign * cw
            else:
                cw = sign * (vr1 - vr0 - v_alpha[i, j])
                v_alpha[i, j] = v_alpha[i, j] - vl1 + vl0 + sign * cw
            v_cw[i, j] = cw
        tcw_l = tl0 ^ tl1 ^ a ^ 1
        tcw_r = tr0 ^ tr1 ^ a
        t_cw[0, i] |= tcw_l << level
        t_cw[1, i] |= tcw_r << level
        tcw_keep = tcw_r if a == 1 else tcw_l
        keep_t0 = tr0 if a == 1 else tl0
        keep_t1 = tr1 if a == 1 else tl1
        t0, t1 = t[0, i], t[1, i]
        if t0 == 1:
            k00 ^= cw0
            k01 ^= cw1
        if t1 == 1:
            k10 ^= cw0
            k11 ^= cw1
        t[0, i] = keep_t0 ^ (t0 & tcw_keep)
        t[1, i] = keep_t1 ^ (t1 & tcw_keep)
        if last:
            blocks[0, 0, i, 0], blocks[0, 0, i, 1] = k00, k01 ^ _FINAL
            blocks[0, 1, i, 0], blocks[0, 1, i, 1] = k10, k11 ^ _FINAL
        else:
            for j in range(4):
                blocks[j, 0, i, 0], blocks[j, 0, i, 1] = k00, k01 ^ (j + 1)
                blocks[j, 1, i, 0], blocks[j, 1, i, 1] = k10, k11 ^ (j + 1)


@njit(cache=True)
def gen_final(blocks, out_flat, t, v_alpha, final):  # pragma: no cover - compiled
    m, k = v_alpha.shape[0], v_alpha.shape[1]
    out = out_flat[: 4 * m].reshape(2, m, 2)
    for i in range(m):
        sign = 1 - 2 * t[1, i]
        for j in range(k):
            leaf0 = out[0, i, j] ^ blocks[0, 0, i, j]
            leaf1 = out[1, i, j] ^ blocks[0, 1, i, j]
            final[i, j] = sign * (leaf1 - leaf0 - v_alpha[i, j])


@njit(cache=True)
def eval_start(root, x, shift, blocks):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        b = (x[i] >> shift) & 1
        s0, s1 = root[i, 0] & _CLEAR, root[i, 1]
        blocks[0, i, 0], blocks[0, i, 1] = s0, s1 ^ (1 + b)
        blocks[1, i, 0], blocks[1, i, 1] = s0, s1 ^ (3 + b)


@njit(cache=True)
def eval_level(blocks, out_flat, x, shift, level, t, value, s_cw, v_cw, t_cw, last):  # pragma: no cover
    m, k = x.shape[0], value.shape[1]
    out = out_flat[: 4 * m].reshape(2, m, 2)
    for i in range(m):
        b = (x[i] >> shift) & 1
        c0 = out[0, i, 0] ^ blocks[0, i, 0]
        c1 = out[0, i, 1] ^ blocks[0, i, 1]
        tp = t[i]
        for j in range(k):
            v = out[1, i, j] ^ blocks[1, i, j]
            value[i, j] += v + (v_cw[i, j] if tp == 1 else 0)
        cw_t = (t_cw[b, i] >> level) & 1
        s0, s1 = c0 & _CLEAR, c1
        if tp == 1:
            s0 ^= s_cw[i, 0]
            s1 ^= s_cw[i, 1]
        t[i] = (c0 & 1) ^ (tp & cw_t)
        if last:
            blocks[0, i, 0], blocks[0, i, 1] = s0, s1 ^ _FINAL
        else:
            nb = (x[i] >> (shift - 1)) & 1
            blocks[0, i, 0], blocks[0, i, 1] = s0, s1 ^ (1 + nb)
            blocks[1, i, 0], blocks[1, i, 1] = s0, s1 ^ (3 + nb)


@njit(cache=True)
def eval_final(blocks, out_flat, t, final, value):  # pragma: no cover - compiled
    m, k = value.shape[0], value.shape[1]
    out = out_flat[: 2 * m].reshape(m, 2)
    for i in range(m):
        for j in range(k):
            value[i, j] += (out[i, j] ^ blocks[0, i, j]) + (final[i, j] if t[i] == 1 else 0)


__all__ = ["gen_start", "gen_level", "gen_final", "eval_start", "eval_level", "eval_final", "np"]
