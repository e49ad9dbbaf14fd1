"""CrypTen's tuple-provider interface inside a party, backed by the dealer.

Every request CrypTen makes (a Beaver triple, a square, binary triples, wrap counts,
B2A bits) and every FSS gate smpc makes (smpc.protocols.fss) is answered from the key
this party shares with the dealer, plus what the dealer sent it: party 0's corrections,
and with comparisons: fss every party's key words (smpc.dealer.material).
"""

from __future__ import annotations

from typing import Any

import torch
from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor
from crypten.mpc.provider.provider import TupleProvider

from smpc import meter
from smpc.dealer import material
from smpc.dealer.streams import MaterialPool, MaterialStream
from smpc.errors import PartyError
from smpc.model.buckets import Bucket
from smpc.protocols import fss
from smpc.protocols.csprng import AesCtrGenerator

PROVIDER_NAME = "SMPC_DEALER"


class DealerTuples(TupleProvider):  # type: ignore[misc]  # CrypTen is untyped: its base class is Any
    """CrypTen's five provider calls and smpc's FSS gates, in terms of `_shares(kind,
    args, kwargs)` and `fss_key(kind, args)` (the party's, or the dealer's trace)."""

    tracing = False  # the dealer's shape-only run: values are thrown away

    def _shares(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        raise NotImplementedError

    def fss_key(self, kind: str, args: tuple[Any, ...]) -> Any:
        """This party's key for one FSS gate (smpc.protocols.fss); None in the dealer's trace."""
        raise NotImplementedError

    def generate_additive_triple(
        self, size0: Any, size1: Any, op: str, device: Any = None, *args: Any, **kwargs: Any
    ) -> tuple[Any, ...]:
        a, b, c = self._shares("additive", (torch.Size(size0), torch.Size(size1), op), kwargs)
        return tuple(ArithmeticSharedTensor.from_shares(t, precision=0) for t in (a, b, c))

    def square(self, size: Any, device: Any = None) -> tuple[Any, Any]:
        r, r2 = self._shares("square", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(r2, precision=0)

    def generate_binary_triple(self, size0: Any, size1: Any, device: Any = None) -> tuple[Any, ...]:
        a, b, c = self._shares("binary", (torch.Size(size0), torch.Size(size1)), {})
        return tuple(BinarySharedTensor.from_shares(t) for t in (a, b, c))

    def wrap_rng(self, size: Any, device: Any = None) -> tuple[Any, Any]:
        r, theta = self._shares("wraps", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(r, precision=0), ArithmeticSharedTensor.from_shares(
            theta, precision=0
        )

    def fixed_pair(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's shares of (A, C = A op B) for one product with a fixed operand
        (smpc.protocols.fixed; args: op, x's size, the weight's name and size, transposed)."""
        a, c = self._shares("fixed", args, kwargs)
        return a, c

    def B2A_rng(self, size: Any, device: Any = None) -> tuple[Any, Any]:
        bit_b, bit_a = self._shares("B2A", (torch.Size(size),), {})
        return ArithmeticSharedTensor.from_shares(bit_a, precision=0), BinarySharedTensor.from_shares(bit_b)


class PartyProvider(DealerTuples):
    """Inside a party: own shares from the key shared with the dealer, plus the items the
    dealer sent this party (`stream`: a run's MaterialStream or a service's MaterialPool)."""

    NAME = PROVIDER_NAME

    def __init__(self) -> None:
        super().__init__()
        self.party_rank = -1
        self.seed = b""
        self.generator: AesCtrGenerator | None = None
        self.stream: MaterialStream | MaterialPool | None = None
        self.pooled = False

    def bind(self, rank: int, seed: bytes, stream: MaterialStream | MaterialPool | None, pooled: bool) -> None:
        """Draw from `seed` and read what the dealer sends on `stream` (None when it sends
        this party nothing); `pooled`: a service's batches, each on its own streams."""
        self.party_rank, self.seed, self.generator, self.stream = rank, seed, material.seeded(seed), stream
        self.pooled = pooled

    def next_batch(self, bucket: Bucket, index: int) -> None:
        """Switch to the material of the next batch: a run's batches follow one another on
        one stream; a service's `index`-th batch of a shape bucket has streams of its own."""
        if self.pooled:
            self.generator = material.seeded(material.batch_seed(self.seed, bucket, index))
        if self.stream is not None:
            self.stream.next_batch(bucket, index)

    def _take(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> torch.Tensor:
        if self.stream is None:
            raise PartyError(f"this party reads no material from the dealer, yet needs a {what}")
        item = self.stream.take(material.request_tag(kind, args, kwargs), what)
        meter.material(item.numel() * item.element_size())
        return item

    def _shares(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if self.generator is None:
            raise PartyError("the dealer provider is not connected")
        shares = material.draw(kind, self.generator, self.party_rank, args, kwargs)
        if self.party_rank == 0:
            shares.append(self._take(kind, args, kwargs, f"{kind} correction"))
        return shares

    def fss_key(self, kind: str, args: tuple[Any, ...]) -> Any:
        if self.generator is None:
            raise PartyError("the dealer provider is not connected")
        elements = fss.count(args)
        what = f"{kind} key of {elements} elements"
        item = self._take(kind, args, {}, what) if self.party_rank in material.receivers(kind) else None
        meter.protocols().keys(
            kind,
            elements,
            0 if item is None else item.numel() * 8,
            fss.width(kind, args) if kind in fss.DCF_KINDS else None,
        )
        try:
            return fss.party_key(kind, self.generator, self.party_rank, args, item)
        except ValueError as exc:
            raise PartyError(f"dealer stream: {what}: {exc}") from None
