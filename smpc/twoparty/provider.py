"""CrypTen's tuple-provider interface inside a party, backed by the other party alone.

Every request CrypTen makes is answered by the two parties together, with no dealer:
products (elementwise, matrix, convolution; and products with a weight's session mask)
by homomorphic sums of products (smpc.twoparty.matrix_triples), squares, AND triples and
B2A bits by oblivious transfer (smpc.twoparty.triples). Each request is one or two
exchanges with the other party, made when CrypTen asks: both parties run the same
program, so their requests come in the same order with the same shapes.

Not supplied: wrap counts (CrypTen asks for them with three or more parties only) and FSS
keys (`comparisons: fss` needs the dealer; comparisons run CrypTen's circuits on AND
triples here).
"""

from __future__ import annotations

import secrets
from typing import Any

import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc.dealer.material import product_size
from smpc.dealer.provider import DealerTuples
from smpc.errors import PartyError
from smpc.protocols import fixed
from smpc.protocols.csprng import KEY_BYTES, AesCtrGenerator
from smpc.twoparty.link import Link
from smpc.twoparty.matrix_triples import MatrixTriples
from smpc.twoparty.triples import OtCorrelations

PROVIDER_NAME = "SMPC_TWO_PARTY"


class TwoPartyProvider(DealerTuples):
    """The two-party source of correlated randomness in one party; `connect(link)` runs
    the session's setup with the other party (base OTs, public keys)."""

    NAME = PROVIDER_NAME

    def __init__(self) -> None:
        super().__init__()
        self.ot: OtCorrelations | None = None
        self.he: MatrixTriples | None = None
        self.seed = b""  # this party's key for its shares of the weights' session masks

    def connect(self, link: Link) -> None:
        """Set up both sources with the other party (three exchanges)."""
        generator = AesCtrGenerator()
        self.ot = OtCorrelations(link, generator)
        self.ot.setup()
        self.he = MatrixTriples(link, generator)
        self.he.setup()
        self.seed = secrets.token_bytes(KEY_BYTES)

    def _sources(self) -> tuple[OtCorrelations, MatrixTriples]:
        if self.ot is None or self.he is None:
            raise PartyError("the two-party source is not connected to the other party")
        return self.ot, self.he

    def _shares(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        ot, he = self._sources()
        if kind == "additive":
            size0, size1, op = args
            return list(he.triple(op, size0, size1, kwargs))
        if kind == "fixed":  # (A, C = A op B) with B the session mask of a weight
            op, x_size, name, w_size, transposed = args
            a = he.generator.ring(x_size)
            b = fixed.operand(fixed.mask_share(self.seed, name, w_size), transposed)
            return [a, he.products(op, a, b, kwargs)]
        if kind == "square":
            r, r2 = ot.squares(_elements(args[0]))
            return [r.view(args[0]), r2.view(args[0])]
        if kind == "binary":
            return self._binary(ot, *args)
        if kind == "B2A":
            arithmetic, binary = ot.shared_bits(_elements(args[0]))
            return [binary.view(args[0]), arithmetic.view(args[0])]
        raise PartyError(f"the two-party source cannot supply {kind} material (two parties need none)")

    @staticmethod
    def _binary(ot: OtCorrelations, size0: torch.Size, size1: torch.Size) -> list[torch.Tensor]:
        if size0 == size1:  # the common case: random-OT triples, one exchange, no corrections
            a, b, c = ot.and_triples(_elements(size0))
            return [a.view(size0), b.view(size1), c.view(size0)]
        shape = product_size("mul", size0, size1, {})
        a, b = ot.generator.ring(size0), ot.generator.ring(size1)
        a_wide, b_wide = a.expand(shape).contiguous(), b.expand(shape).contiguous()
        return [a, b, (a_wide & b_wide) ^ ot.and_cross(a_wide, b_wide)]

    def fss_key(self, kind: str, args: tuple[Any, ...]) -> Any:
        raise PartyError("comparisons: fss needs the dealer's keys; with two parties alone comparisons run circuits")


def _elements(size: torch.Size) -> int:
    n = 1
    for d in size:
        n *= d
    return n
