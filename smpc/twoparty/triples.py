"""Correlated randomness made by the two parties alone, from oblivious transfer.

Each party is the OT extension's receiver in one direction (the direction named by its
rank) and its sender in the other, so every kind below is symmetric and costs one or
two exchanges whatever its size (smpc.twoparty.ot for the OTs themselves):

- **Products** a_p * b_q of one party's ring element and the other's (an oblivious linear
  evaluation, OLE) by Gilboa's method ("Two Party RSA Key Generation", CRYPTO 1999): the
  receiver chooses with the 64 bits of b, the sender's correlation for bit j is a 2^j,
  and the receiver's sum minus the sender's is a b mod 2^64. A correlated OT here is a
  random OT whose sender sends y = delta + H(q) - H(q ^ s), 8 bytes (Asharov et al., CCS
  2013, section 5.4). 64 OTs per product: 1 KiB of extension and 512 B of corrections.
- **Beaver triples** (a0 + a1)(b0 + b1) = c0 + c1 for elementwise products: both cross
  terms at once (one OLE per direction); **squares** r^2 with one OLE (2 r0 r1).
- **AND triples** on 64-bit words (CrypTen's binary shares): from random OTs with no
  corrections at all: the sender's bit of a triple is x0 ^ x1 of its OT's two messages
  and the receiver's is its choice, so x0 ^ x_c = a b (the random-OT AND triple; e.g.
  Asharov et al., CCS 2013, section 5.4; the "OT-based triples" of GMW implementations).
- **Comparison material** for the millionaires' protocol (smpc.protocols.millionaires):
  1-out-of-16 random OTs, each from four random OTs (pad i takes, from the t-th OT's
  message for bit t of i, the 2-bit piece that no other i with that message takes: Naor
  and Pinkas's 1-out-of-N from log N OTs), and bit triples as above.
- **Shared bits** for CrypTen's B2A: a random bit r = r0 ^ r1 in both sharings, with
  r0 + r1 - 2 r0 r1 from one correlated OT per bit.

Every value is a party's own draw from its secure generator or an OT output; nothing of
one party's inputs reaches the other but OT messages, which are uniform to it.
"""

from __future__ import annotations

import numpy as np
import torch

from smpc.protocols import millionaires
from smpc.protocols.csprng import AesCtrGenerator
from smpc.twoparty.link import Link
from smpc.twoparty.ot import KAPPA, POINT_BYTES, ExtensionReceiver, ExtensionSender, OtError, warm

RING_BITS = 64
_SHIFTS = np.arange(RING_BITS, dtype=np.int64)


def _bits(values: np.ndarray) -> np.ndarray:
    # [n] int64 -> [n * 64] 0/1, element-major (bit j of element e at e * 64 + j)
    return ((values.reshape(-1, 1) >> _SHIFTS) & 1).reshape(-1)


def _words(bits: np.ndarray) -> torch.Tensor:
    # [n * 64] 0/1 -> [n] int64 words (the inverse of _bits)
    weights = np.int64(1) << _SHIFTS
    return torch.from_numpy((bits.reshape(-1, RING_BITS).astype(np.int64) * weights).sum(axis=1))


class OtCorrelations:
    """One party's side of the two OT extensions between the parties, and the correlated
    randomness made from them. `setup()` runs the base OTs (two exchanges)."""

    def __init__(self, link: Link, generator: AesCtrGenerator | None = None) -> None:
        self.link = link
        self.generator = generator or AesCtrGenerator()
        self.receiver = ExtensionReceiver(direction=link.rank)  # chooses; its rank names the direction
        self.sender = ExtensionSender(direction=link.other)

    def setup(self) -> None:
        """The base OTs of both directions, in two exchanges."""
        link = self.link
        warm()
        try:
            theirs = link.exchange(self.receiver.base.public(), POINT_BYTES)
            queries = link.exchange(self.sender.base.query(theirs), KAPPA * POINT_BYTES)
            self.receiver.base.finish(queries)
        except OtError as problem:
            raise link.refused("base OTs", problem) from None

    # -- the OT batches of one exchange each ---------------------------------

    def random_ots(self, choices: np.ndarray, step: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """m random OTs each way in one exchange (m = len(choices), a multiple of 8):
        (our receiver's messages for `choices`, our sender's two messages), [m, 2]
        int64 each (128 bits); `step` names the exchange in a refusal."""
        m = len(choices)
        u, chosen = self.receiver.columns(choices)
        theirs = self.link.exchange(u, len(u))
        try:
            zero, one = self.sender.rows(theirs, m)
        except OtError as problem:
            raise self.link.refused(step, problem) from None
        return chosen, zero, one

    def _correlated(self, choices: np.ndarray, deltas: np.ndarray, step: str) -> tuple[np.ndarray, np.ndarray]:
        # correlated OTs in both directions: (our receiver's outputs, our sender's x), with
        # receiver - sender = choice * delta (mod 2^64) per OT; deltas are our sender's
        m = len(choices)
        chosen, zero, one = self.random_ots(choices, step)
        x = zero[:, 0]
        corrections = deltas + x - one[:, 0]
        theirs = np.frombuffer(self.link.exchange(corrections.tobytes(), 8 * m), dtype=np.int64)
        received = chosen[:, 0] + choices.astype(np.int64) * theirs
        return received, x

    def _cross(self, mine_choosing: np.ndarray, mine_offering: np.ndarray, step: str) -> np.ndarray:
        # shares of a_self * b_other + a_other * b_self... per element: our share of the
        # two OLEs in which we choose with `mine_choosing` and offer `mine_offering`
        n = len(mine_choosing)
        choices = _bits(mine_choosing)
        deltas = (np.repeat(mine_offering, RING_BITS).reshape(n, RING_BITS) << _SHIFTS).reshape(-1)
        received, x = self._correlated(choices, deltas, step)
        shares: np.ndarray = (received - x).reshape(n, RING_BITS).sum(axis=1)
        return shares

    # -- what a provider asks for --------------------------------------------------

    def _draw(self, n: int) -> np.ndarray:
        return self.generator.ring((n,)).numpy()

    def mul_triples(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This party's shares of n Beaver triples c = a b in Z/2^64 ([n] int64 each)."""
        a, b = self._draw(n), self._draw(n)
        # our share of a_other b_self (we choose with b) + a_self b_other (we offer a)
        cross = self._cross(b, a, "products")
        return torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(a * b + cross)

    def squares(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's shares of n pairs (r, r^2): r^2 = r0^2 + r1^2 + 2 r0 r1."""
        r = self._draw(n)
        # one OLE is enough (r0 r1 once): party 1 chooses with r1, party 0 offers r0; the
        # other direction offers zeros (its OTs are still run: both directions are symmetric)
        if self.link.rank == 1:
            cross = self._cross(r, np.zeros(n, dtype=np.int64), "squares")
        else:
            cross = self._cross(np.zeros(n, dtype=np.int64), r, "squares")
        return torch.from_numpy(r), torch.from_numpy(r * r + 2 * cross)

    def and_triples(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This party's XOR shares of n AND triples on 64-bit words: (a0 ^ a1) & (b0 ^ b1)
        = c0 ^ c1, [n] int64 each, in one exchange."""
        m = n * RING_BITS
        b_bits = np.frombuffer(self.generator.random_bytes((m + 7) // 8), dtype=np.uint8)
        choices = np.unpackbits(b_bits, bitorder="little")[:m]
        chosen, zero, one = self.random_ots(choices, "AND triples")
        x0, x1, xc = zero[:, 0] & 1, one[:, 0] & 1, chosen[:, 0] & 1
        # our bit of a is x0 ^ x1 (as the direction's sender); b is our choice; the cross
        # terms' shares are x0 (sender) and x_c (receiver)
        a_bits = x0 ^ x1
        c_bits = (a_bits & choices) ^ x0 ^ xc
        return _words(a_bits), _words(choices), _words(c_bits)

    def and_cross(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Our XOR share of (a_ours & b_theirs) ^ (a_theirs & b_ours), bit by bit, for our
        words a and b of one shape (the other party's have the same): random OTs with one
        bit of correction each (we choose with b's bits and offer a's)."""
        words = a.reshape(-1).numpy()
        choices = _bits(b.reshape(-1).numpy()).astype(np.uint8)
        chosen, zero, one = self.random_ots(choices, "AND triples")
        x0, x1, xc = (
            (zero[:, 0] & 1).astype(np.uint8),
            (one[:, 0] & 1).astype(np.uint8),
            (chosen[:, 0] & 1).astype(np.uint8),
        )
        corrections = np.packbits(_bits(words).astype(np.uint8) ^ x0 ^ x1, bitorder="little")
        theirs = np.frombuffer(self.link.exchange(corrections.tobytes(), len(corrections)), dtype=np.uint8)
        received = xc ^ (choices & np.unpackbits(theirs, bitorder="little"))
        return _words(x0 ^ received).view(a.shape)

    def shared_bits(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's shares of n random bits r = r0 ^ r1: (arithmetic, binary), [n]
        int64 each (CrypTen's B2A_rng)."""
        raw = np.frombuffer(self.generator.random_bytes((n + 7) // 8), dtype=np.uint8)
        mine = np.unpackbits(raw, bitorder="little")[:n].astype(np.int64)
        size = -(-n // 8) * 8  # the OTs run in multiples of 8
        padded = np.zeros(size, dtype=np.int64)
        padded[:n] = mine
        # r0 r1: party 1 chooses with r1, party 0 offers r0 (the other direction idles)
        if self.link.rank == 1:
            received, _ = self._correlated(padded, np.zeros(size, dtype=np.int64), "shared bits")
            product = received[:n]
        else:
            _, x = self._correlated(np.zeros(size, dtype=np.int64), padded, "shared bits")
            product = -x[:n]
        return torch.from_numpy(mine - 2 * product), torch.from_numpy(mine)

    def comparisons(self, n: int) -> list[torch.Tensor]:
        """This party's offline material for n millionaires' comparisons, in two
        exchanges (random OTs, then AND triples); its layout is
        smpc.protocols.millionaires.carry_share's."""
        digits, bits_per_digit = millionaires.SENT, millionaires.DIGIT_BITS
        m = n * millionaires.ROTS
        raw = np.frombuffer(self.generator.random_bytes((m + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")[:m]
        chosen, zero, one = self.random_ots(bits, "comparison OTs")
        choices = (bits.reshape(n, digits, bits_per_digit).astype(np.int64) << np.arange(bits_per_digit)).sum(axis=2)
        # the low 64 bits of each 128-bit message are enough: 8 pieces of 2 bits
        chosen_low, zero_low, one_low = (x[:, 0].reshape(n, digits, bits_per_digit) for x in (chosen, zero, one))
        chosen_pad = np.zeros((n, digits), dtype=np.int64)
        pads = np.zeros((n, digits), dtype=np.int64)
        for t in range(bits_per_digit):
            chosen_pad ^= (chosen_low[:, :, t] >> (2 * millionaires.piece(choices, t))) & 3
            for i in range(millionaires.VALUES):
                message = one_low if (i >> t) & 1 else zero_low
                pads ^= ((message[:, :, t] >> (2 * millionaires.piece(i, t))) & 3) << (2 * i)
        shares = np.frombuffer(self.generator.random_bytes(n * digits), dtype=np.uint8).reshape(n, digits) & 3
        a, b, c = self.and_triples(-(-n * millionaires.ANDS // RING_BITS))
        tables = [pads, choices, chosen_pad, shares.astype(np.int64)]
        return [torch.from_numpy(x) for x in tables] + [a, b, c]
