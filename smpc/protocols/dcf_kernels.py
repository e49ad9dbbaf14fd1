"""The DCF's per-level work, compiled (numba): one pass over the elements between two AES calls.

smpc.protocols.dcf calls AES (OpenSSL, over the whole chunk) and then one of these
kernels, which does in a single loop what would otherwise be some fifty whole-tensor
operations per level: the fixed-key MMO xor, picking the kept and lost children by the
threshold's (or input's) bit, the correction words, the control bits, and the next
level's tweaked AES inputs. Layouts, element-major so that one element's blocks are
together: `blocks` is the AES input ([m, 4, 2, 2] at key generation: element x tweak x
party x word; [m, 2, 2] at evaluation: element x (seed block, value block of the chosen
child) x word), `out` the AES output of the same shape. Tweaks (word 1):
1/2 the left/right child's seed, 3/4 their values, 5 a leaf's output. int64 arithmetic
wraps, as the ring Z/2^64 needs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_CLEAR = -2  # ~1: drops a block's control bit
_FINAL = 5


@njit(cache=True)
def gen_start(roots: np.ndarray, blocks: np.ndarray, t: np.ndarray) -> None:  # pragma: no cover - compiled
    m = roots.shape[1]
    for p in range(2):
        for i in range(m):
            s0, s1 = roots[p, i, 0] & _CLEAR, roots[p, i, 1]
            for j in range(4):
                blocks[i, j, p, 0] = s0
                blocks[i, j, p, 1] = s1 ^ (j + 1)
            t[p, i] = p


@njit(cache=True)
def gen_level(  # pragma: no cover
    blocks: np.ndarray,
    out_flat: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    shift: int,
    level: int,
    t: np.ndarray,
    v_alpha: np.ndarray,
    s_cw: np.ndarray,
    v_cw: np.ndarray,
    t_cw: np.ndarray,
    last: bool,
) -> None:
    # branch-free: the threshold's bits are random, so every choice is a mask
    m, k = alpha.shape[0], beta.shape[1]
    out = out_flat[: 16 * m].reshape(m, 4, 2, 2)
    for i in range(m):
        a = (alpha[i] >> shift) & 1
        right = -a  # all ones: keep the right child, lose the left
        # both parties' children: seeds (two words each) and control bits
        l00 = out[i, 0, 0, 0] ^ blocks[i, 0, 0, 0]
        l01 = out[i, 0, 0, 1] ^ blocks[i, 0, 0, 1]
        r00 = out[i, 1, 0, 0] ^ blocks[i, 1, 0, 0]
        r01 = out[i, 1, 0, 1] ^ blocks[i, 1, 0, 1]
        l10 = out[i, 0, 1, 0] ^ blocks[i, 0, 1, 0]
        l11 = out[i, 0, 1, 1] ^ blocks[i, 0, 1, 1]
        r10 = out[i, 1, 1, 0] ^ blocks[i, 1, 1, 0]
        r11 = out[i, 1, 1, 1] ^ blocks[i, 1, 1, 1]
        tl0, tr0, tl1, tr1 = l00 & 1, r00 & 1, l10 & 1, r10 & 1
        l00 &= _CLEAR
        r00 &= _CLEAR
        l10 &= _CLEAR
        r10 &= _CLEAR
        # lose = a ? left : right; keep = the other
        lose00 = r00 ^ ((l00 ^ r00) & right)
        lose01 = r01 ^ ((l01 ^ r01) & right)
        lose10 = r10 ^ ((l10 ^ r10) & right)
        lose11 = r11 ^ ((l11 ^ r11) & right)
        cw0, cw1 = lose00 ^ lose10, lose01 ^ lose11
        s_cw[i, 0], s_cw[i, 1] = cw0, cw1
        sign = 1 - 2 * t[1, i]
        for j in range(k):
            vl0 = out[i, 2, 0, j] ^ blocks[i, 2, 0, j]
            vr0 = out[i, 3, 0, j] ^ blocks[i, 3, 0, j]
            vl1 = out[i, 2, 1, j] ^ blocks[i, 2, 1, j]
            vr1 = out[i, 3, 1, j] ^ blocks[i, 3, 1, j]
            vlose0 = vr0 ^ ((vl0 ^ vr0) & right)
            vlose1 = vr1 ^ ((vl1 ^ vr1) & right)
            # going right, every x of the left subtree is below alpha: beta goes in
            cw = sign * (vlose1 - vlose0 - v_alpha[i, j] + (beta[i, j] & right))
            v_alpha[i, j] = v_alpha[i, j] - (vl1 ^ vr1 ^ vlose1) + (vl0 ^ vr0 ^ vlose0) + sign * cw
            v_cw[i, j] = cw
        tcw_l = tl0 ^ tl1 ^ a ^ 1
        tcw_r = tr0 ^ tr1 ^ a
        t_cw[0, i] |= tcw_l << level
        t_cw[1, i] |= tcw_r << level
        tcw_keep = tcw_l ^ ((tcw_l ^ tcw_r) & a)
        t0, t1 = t[0, i], t[1, i]
        k00 = (l00 ^ r00 ^ lose00) ^ (cw0 & -t0)
        k01 = (l01 ^ r01 ^ lose01) ^ (cw1 & -t0)
        k10 = (l10 ^ r10 ^ lose10) ^ (cw0 & -t1)
        k11 = (l11 ^ r11 ^ lose11) ^ (cw1 & -t1)
        t[0, i] = (tl0 ^ ((tl0 ^ tr0) & a)) ^ (t0 & tcw_keep)
        t[1, i] = (tl1 ^ ((tl1 ^ tr1) & a)) ^ (t1 & tcw_keep)
        if last:
            blocks[i, 0, 0, 0], blocks[i, 0, 0, 1] = k00, k01 ^ _FINAL
            blocks[i, 0, 1, 0], blocks[i, 0, 1, 1] = k10, k11 ^ _FINAL
        else:
            for j in range(4):
                blocks[i, j, 0, 0], blocks[i, j, 0, 1] = k00, k01 ^ (j + 1)
                blocks[i, j, 1, 0], blocks[i, j, 1, 1] = k10, k11 ^ (j + 1)


@njit(cache=True)
def gen_final(  # pragma: no cover - compiled
    leaves: np.ndarray, out_flat: np.ndarray, t: np.ndarray, v_alpha: np.ndarray, final: np.ndarray
) -> None:
    # leaves [m, 2, 2]: element x party x word, the leaf seeds with the final tweak
    m, k = v_alpha.shape[0], v_alpha.shape[1]
    out = out_flat[: 4 * m].reshape(m, 2, 2)
    for i in range(m):
        sign = 1 - 2 * t[1, i]
        for j in range(k):
            leaf0 = out[i, 0, j] ^ leaves[i, 0, j]
            leaf1 = out[i, 1, j] ^ leaves[i, 1, j]
            final[i, j] = sign * (leaf1 - leaf0 - v_alpha[i, j])


@njit(cache=True)
def eval_start(root: np.ndarray, x: np.ndarray, shift: int, blocks: np.ndarray) -> None:  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        b = (x[i] >> shift) & 1
        s0, s1 = root[i, 0] & _CLEAR, root[i, 1]
        blocks[i, 0, 0], blocks[i, 0, 1] = s0, s1 ^ (1 + b)
        blocks[i, 1, 0], blocks[i, 1, 1] = s0, s1 ^ (3 + b)


@njit(cache=True)
def eval_level(  # pragma: no cover
    blocks: np.ndarray,
    out_flat: np.ndarray,
    x: np.ndarray,
    shift: int,
    level: int,
    t: np.ndarray,
    value: np.ndarray,
    s_cw: np.ndarray,
    v_cw: np.ndarray,
    t_cw: np.ndarray,
    last: bool,
) -> None:
    m, k = x.shape[0], value.shape[1]
    out = out_flat[: 4 * m].reshape(m, 2, 2)
    for i in range(m):
        b = (x[i] >> shift) & 1
        c0 = out[i, 0, 0] ^ blocks[i, 0, 0]
        c1 = out[i, 0, 1] ^ blocks[i, 0, 1]
        tp = t[i]
        on = -tp  # all ones where the control bit applies the corrections
        for j in range(k):
            value[i, j] += (out[i, 1, j] ^ blocks[i, 1, j]) + (v_cw[i, j] & on)
        cw_t = (t_cw[b, i] >> level) & 1
        s0 = (c0 & _CLEAR) ^ (s_cw[i, 0] & on)
        s1 = c1 ^ (s_cw[i, 1] & on)
        t[i] = (c0 & 1) ^ (tp & cw_t)
        if last:
            blocks[i, 0, 0], blocks[i, 0, 1] = s0, s1 ^ _FINAL
        else:
            nb = (x[i] >> (shift - 1)) & 1
            blocks[i, 0, 0], blocks[i, 0, 1] = s0, s1 ^ (1 + nb)
            blocks[i, 1, 0], blocks[i, 1, 1] = s0, s1 ^ (3 + nb)


@njit(cache=True)
def eval_final(  # pragma: no cover - compiled
    leaves: np.ndarray, out_flat: np.ndarray, t: np.ndarray, final: np.ndarray, value: np.ndarray
) -> None:
    m, k = value.shape[0], value.shape[1]
    out = out_flat[: 2 * m].reshape(m, 2)
    for i in range(m):
        for j in range(k):
            value[i, j] += (out[i, j] ^ leaves[i, j]) + (final[i, j] if t[i] == 1 else 0)


__all__ = ["gen_start", "gen_level", "gen_final", "eval_start", "eval_level", "eval_final", "np"]
