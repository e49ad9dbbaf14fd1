"""[x < 0] of a secret x between two parties by oblivious transfer, without a dealer:
the millionaires' protocol of CrypTFlow2 (Rathee, Rastogi, Gupta, Gupta, Chandran,
Sharma, "CrypTFlow2: Practical 2-Party Secure Inference", CCS 2020, section 3.1), the
comparison Cheetah builds on (Huang et al., USENIX Security 2022).

With x = x0 + x1 mod 2^64, MSB(x) = MSB(x0) ^ MSB(x1) ^ carry, where carry is the carry
into bit 63 of the low 63 bits: carry = [a < b] with a = 2^63 - 1 - low(x0) held by
party 0 and b = low(x1) held by party 1. The comparison of a and b:

- **Leaves**: both are cut into 16 digits of 4 bits (the top one of 3). For each digit,
  one party (the sender) holds its digit v and the other (the receiver) its digit u; a
  1-out-of-16 OT gives the receiver [a_j < b_j] and [a_j = b_j] masked by the sender's
  random bits, so the two hold XOR shares of both. Party 0 sends for the top 8 digits and
  chooses in the low 8; party 1 the other way round, so both directions of the OT
  extension are used.
- **Tree**: lt = lt_hi ^ (eq_hi & lt_lo) and eq = eq_hi & eq_lo combine two neighbouring
  digit groups; four levels, 29 ANDs per comparison, each AND on a Beaver bit triple.

The OTs are random OTs made in the offline phase (a 1-out-of-16 random OT from four
1-out-of-2 random OTs: pad_i = XOR over t of a 2-bit piece of the t-th OT's message for
bit t of i, a piece no other i with that message uses, as in Naor and Pinkas's 1-out-of-N
from log N OTs), and are derandomized online: the receiver sends u ^ c (c its random
choice), the sender the 16 masked entries M_i ^ s ^ pad_(i ^ u ^ c), of which the
receiver can unmask only entry u. So a comparison's online phase sends 36 bytes of
leaves and 58 bits of openings per party in six rounds, and its offline phase 61 random
OTs per direction, about 1 KB (CrypTen's circuits take 13 AND triples on 64-bit words:
832 random OTs offline and 1.3 KB online).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc import meter

# send our bytes, receive the other party's of the same length (one round)
Exchange = Callable[[np.ndarray], np.ndarray]

DIGIT_BITS = 4
DIGITS = 16  # 63 bits: 15 digits of 4 bits and a top digit of 3
VALUES = 1 << DIGIT_BITS
SENT = DIGITS // 2  # the digits whose tables a party sends (and the ones it chooses in)
ANDS = 2 * (8 + 4 + 2) + 1  # the tree's ANDs per comparison (the last level needs no eq)
ROTS = SENT * DIGIT_BITS  # 1-out-of-2 random OTs per comparison and direction for the leaves
LOW63 = (1 << 63) - 1
_SHIFTS = np.arange(DIGITS - 1, -1, -1, dtype=np.int64) * DIGIT_BITS  # digit 0 is the top


def piece(index: Any, t: int) -> Any:
    """Which 2-bit piece of the t-th random OT's message the pad of entry `index` takes:
    the other three bits of the index (so no two entries share a piece of a message)."""
    return (index & ((1 << t) - 1)) | ((index >> (t + 1)) << t)


def carry_share(rank: int, share: torch.Tensor, items: list[torch.Tensor], exchange: Exchange) -> np.ndarray:
    """This party's XOR share of the carry into bit 63 of share0 + share1 ([n] uint8),
    for `share` [n] int64 (its arithmetic share) and its offline material `items`:

    - pads [n, 8] int64: the 16 two-bit pads of each digit this party sends, pad i at
      bits 2i and 2i + 1;
    - choices, chosen [n, 8] int64: the random choice c of each digit it chooses in, and
      pad_c;
    - shares [n, 8] int64: its random 2-bit output of each digit it sends;
    - a, b, c: bit triples c = a & b packed in 64-bit words, ANDS a comparison.
    """
    low = share.numpy() & LOW63
    lt_bits, eq_bits = _leaves(rank, (LOW63 - low) if rank == 0 else low, items, exchange)  # a, b
    triples = _Triples(items, share.numel())
    # the tree, one round a level: neighbouring groups, the higher one first
    while lt_bits.shape[1] > 1:
        half = lt_bits.shape[1] // 2
        hi_lt, lo_lt, hi_eq, lo_eq = lt_bits[:, 0::2], lt_bits[:, 1::2], eq_bits[:, 0::2], eq_bits[:, 1::2]
        last = half == 1
        x = hi_eq if last else np.concatenate([hi_eq, hi_eq], axis=1)
        y = lo_lt if last else np.concatenate([lo_lt, lo_eq], axis=1)
        z = triples.and_(rank, x, y, exchange)
        lt_bits = hi_lt ^ z[:, :half]
        eq_bits = z[:, half:] if not last else eq_bits[:, :1]
    return lt_bits[:, 0]


def equal_share(rank: int, share: torch.Tensor, items: list[torch.Tensor], exchange: Exchange) -> np.ndarray:
    """This party's XOR share of [share0 + share1 = 0] ([n] uint8): [a = b] for a = share0
    and b = -share1, all 64 bits (16 digits of 4), from the same leaves and 15 of the
    triples (`items` as for carry_share)."""
    mine = share.numpy() if rank == 0 else -share.numpy()
    _, eq_bits = _leaves(rank, mine, items, exchange)
    triples = _Triples(items, share.numel())
    while eq_bits.shape[1] > 1:
        eq_bits = triples.and_(rank, eq_bits[:, 0::2], eq_bits[:, 1::2], exchange)
    return eq_bits[:, 0]


def _leaves(
    rank: int, mine: np.ndarray, items: list[torch.Tensor], exchange: Exchange
) -> tuple[np.ndarray, np.ndarray]:
    # XOR shares of [a_j < b_j] and [a_j = b_j] for the 16 digits of a (party 0's) and b
    # (party 1's), [n, 16] uint8 each, the top digit first: two rounds
    pads, choices, chosen_pad, shares = (item.numpy() for item in items[:4])
    n = mine.shape[0]
    digits = (mine[:, None] >> _SHIFTS) & (VALUES - 1)
    sending, choosing = (slice(0, SENT), slice(SENT, DIGITS)) if rank == 0 else (slice(SENT, DIGITS), slice(0, SENT))
    # round 1: the offsets of our choices (4 bits each)
    u = digits[:, choosing]
    offsets = (u ^ choices).astype(np.uint8)
    theirs = exchange(_nibbles(offsets)).reshape(n, SENT // 2)
    their_offsets = np.stack([theirs & 15, theirs >> 4], axis=2).reshape(n, SENT)
    # round 2: our tables, 16 two-bit entries in a word, entry i for their digit i: the
    # entries of digit v from a lookup, our output bits in every entry, and the pads
    # moved so that entry i holds pad (i ^ their offset)
    v = digits[:, sending]
    table = _ENTRIES[rank][v] ^ (shares * _EVERY_ENTRY) ^ _moved(pads, their_offsets)
    their_tables = exchange(table.astype(np.uint32).view(np.uint8).reshape(-1)).view(np.uint32).reshape(n, SENT)
    got = ((their_tables.astype(np.int64) >> (2 * u)) & 3) ^ chosen_pad
    leaves = np.empty((n, DIGITS), dtype=np.int64)
    leaves[:, sending], leaves[:, choosing] = shares, got
    return (leaves & 1).astype(np.uint8), (leaves >> 1).astype(np.uint8)


class _Triples:
    """The bit triples of n comparisons, taken in order, a column of each at a time."""

    def __init__(self, items: list[torch.Tensor], n: int) -> None:
        self.a, self.b, self.c = (
            np.unpackbits(word.numpy().view(np.uint8), bitorder="little")[: n * ANDS].reshape(n, ANDS)
            for word in items[4:7]
        )
        self.used = 0

    def and_(self, rank: int, x: np.ndarray, y: np.ndarray, exchange: Exchange) -> np.ndarray:
        """Shares of x & y ([n, k] bits each) in one round: open x ^ a and y ^ b."""
        k = x.shape[1]
        a, b, c = (t[:, self.used : self.used + k] for t in (self.a, self.b, self.c))
        self.used += k
        ours = np.packbits(np.concatenate([x ^ a, y ^ b], axis=1), bitorder="little")
        opened = np.unpackbits(exchange(ours) ^ ours, bitorder="little")[: 2 * x.size].reshape(x.shape[0], -1)
        e, f = opened[:, :k], opened[:, k:]
        z: np.ndarray = c ^ (e & b) ^ (f & a)
        return z ^ (e & f) if rank == 0 else z


def _entries(rank: int) -> np.ndarray:
    # [16] words: the table of a sender's digit v, entry i = [a < b] | [a = b] << 1 with
    # a = v, b = i at party 0 and a = i, b = v at party 1
    words = np.zeros(VALUES, dtype=np.int64)
    for v in range(VALUES):
        for i in range(VALUES):
            lt = v < i if rank == 0 else i < v
            words[v] |= (int(lt) | int(v == i) << 1) << (2 * i)
    return words


_ENTRIES = (_entries(0), _entries(1))
_EVERY_ENTRY = int("01" * VALUES, 2)  # a 2-bit value times this is in all 16 entries
# swapping the entries i and i ^ 2^k of a word, for k = 0..3: (shift, mask of the lower ones)
_SWAPS = tuple((2 << k, int(("0" * (2 << k) + "1" * (2 << k)) * (8 >> k), 2)) for k in range(DIGIT_BITS))


def _moved(pads: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    # entry i of the result is entry i ^ offset of `pads` (per word): one swap per bit of the offset
    out = pads.copy()
    for k, (shift, mask) in enumerate(_SWAPS):
        swapped = ((out >> shift) & mask) | ((out & mask) << shift)
        out = np.where((offsets >> k) & 1 == 1, swapped, out)
    moved: np.ndarray = out
    return moved


def _nibbles(values: np.ndarray) -> np.ndarray:
    # [n, 8] values below 16 -> [n * 4] bytes, two to a byte
    pairs = values.reshape(values.shape[0], -1, 2)
    packed: np.ndarray = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1).astype(np.uint8)
    return packed


def _exchange(ours: np.ndarray) -> np.ndarray:
    # over CrypTen's communicator of the moment (metered, bounded by timeouts.op_s), as
    # whole 64-bit words: its bookkeeping counts eight bytes an element
    import crypten.communicator as comm

    raw = ours.view(np.uint8).reshape(-1)
    padded = np.zeros(-(-raw.size // 8) * 8, dtype=np.uint8)
    padded[: raw.size] = raw
    communicator = comm.get()
    gathered = communicator.all_gather(torch.from_numpy(padded.view(np.int64)))
    theirs: np.ndarray = gathered[1 - communicator.get_rank()].numpy().view(np.uint8)[: raw.size].copy()
    return theirs


def ltz(x: Any) -> Any:
    """[x < 0] of a secret x, as 0/1 arithmetic shares at scale 1 (CrypTen's `_ltz`):
    the carry by the millionaires' protocol, then CrypTen's B2A of one bit."""

    def sign(rank: int, share: torch.Tensor, items: list[torch.Tensor]) -> torch.Tensor:
        carry = carry_share(rank, share, items, _exchange)
        return ((share >> 63) & 1) ^ torch.from_numpy(carry.astype(np.int64))

    return _gate(x, sign)


def eqz(x: Any) -> Any:
    """[x = 0] of a secret x, as 0/1 arithmetic shares at scale 1 (CrypTen's `_eqz_2PC`):
    the equality tree on the millionaires' leaves, then CrypTen's B2A of one bit."""

    def zero(rank: int, share: torch.Tensor, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(equal_share(rank, share, items, _exchange).astype(np.int64))

    return _gate(x, zero)


def _gate(x: Any, bit_of: Callable[[int, torch.Tensor, list[torch.Tensor]], torch.Tensor]) -> Any:
    # one bit per element of x from its material, XOR-shared, then arithmetic
    import crypten.communicator as comm
    import crypten.mpc
    from crypten.mpc import MPCTensor
    from crypten.mpc.ptype import ptype as Ptype

    share = x.share.reshape(-1)
    with meter.protocols().spent("comparisons", share.numel()):
        items = crypten.mpc.get_default_provider().millionaires(torch.Size(x.share.shape))
        if items is None:  # the shape-only trace of the offline phase
            bit = torch.zeros_like(share)
        else:
            bit = bit_of(comm.get().get_rank(), share, items)
        binary = MPCTensor.from_shares(bit.view(x.share.shape), precision=0, ptype=Ptype.binary)
        result = binary._to_ptype(Ptype.arithmetic, precision=0, bits=1)
    result.encoder._scale = 1
    return result
