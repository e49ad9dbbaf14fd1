"""The OT extension's bit-matrix transpose, compiled (numba).

IKNP works on a KAPPA x m bit matrix by columns (one PRG stream per base OT) and hashes
it by rows (one 128-bit row per OT); numpy can only transpose it bit by bit through a
byte per bit. This kernel transposes it in 8 x 8 bit blocks held in one 64-bit word
(Warren, "Hacker's Delight", 2nd ed., section 7-3: transpose8 by three swaps of
sub-blocks), a block of 8 OTs x 8 base OTs per step.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def transpose(columns: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover - compiled
    # columns: [kappa, m / 8] uint8 (bit i % 8 of byte i // 8 of column j is OT i's bit j);
    # rows: [m, kappa / 8] uint8 (bit j % 8 of byte j // 8 of row i is the same bit)
    kappa, nbytes = columns.shape
    for ib in range(nbytes):  # OTs 8 ib .. 8 ib + 7
        for jb in range(kappa // 8):  # base OTs 8 jb .. 8 jb + 7
            # the block as a word: byte r = column 8 jb + r's byte ib (bit c = OT 8 ib + c)
            x = np.uint64(0)
            for r in range(8):
                x |= np.uint64(columns[8 * jb + r, ib]) << np.uint64(8 * r)
            # transpose the 8 x 8 bit matrix (byte r, bit c) -> (byte c, bit r)
            t = (x ^ (x >> np.uint64(7))) & np.uint64(0x00AA00AA00AA00AA)
            x = x ^ t ^ (t << np.uint64(7))
            t = (x ^ (x >> np.uint64(14))) & np.uint64(0x0000CCCC0000CCCC)
            x = x ^ t ^ (t << np.uint64(14))
            t = (x ^ (x >> np.uint64(28))) & np.uint64(0x00000000F0F0F0F0)
            x = x ^ t ^ (t << np.uint64(28))
            for c in range(8):
                rows[8 * ib + c, jb] = np.uint8((x >> np.uint64(8 * c)) & np.uint64(0xFF))
