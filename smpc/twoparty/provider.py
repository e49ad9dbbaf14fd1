"""CrypTen's tuple-provider interface inside a party, backed by the other party alone.

Every request CrypTen makes is answered by the two parties together, with no dealer:
products (elementwise, matrix, convolution; and products with a weight's session mask)
by homomorphic sums of products (smpc.twoparty.matrix_triples), squares, AND triples and
B2A bits by oblivious transfer (smpc.twoparty.triples), and the random OTs and bit
triples of the millionaires' comparisons (comparisons: ot, smpc.protocols.millionaires).

A run's material is made in an offline phase, before its online phase: each party
traces a batch on shapes only (the dealer's shape run, smpc.dealer.trace: CrypTen's
protocols do not branch on values, so both parties list the same requests in the same
order), then the two make every batch's items together, request by request, and the
online phase takes them in order, each checked against the request it answers. Without
an offline phase (`make` not called) each request is made when CrypTen asks.

Not supplied: wrap counts (CrypTen asks for them with three or more parties only) and FSS
keys (`comparisons: fss` needs the dealer; here comparisons run the millionaires'
protocol, or CrypTen's circuits on AND triples).
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from typing import Any

import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc import meter
from smpc.config import Config
from smpc.dealer import material
from smpc.dealer.material import product_size
from smpc.dealer.provider import PROVIDER_NAME as DEALER_PROVIDER
from smpc.dealer.provider import DealerTuples
from smpc.dealer.trace import TracingProvider, shape_run
from smpc.model.program import Program
from smpc.errors import PartyError
from smpc.protocols import fixed, millionaires
from smpc.protocols.csprng import KEY_BYTES, AesCtrGenerator
from smpc.twoparty import bilinear, packing
from smpc.twoparty.he import FRESH_BYTES, PRIMES, RESULT_BYTES, N
from smpc.twoparty.link import Link
from smpc.twoparty.matrix_triples import MatrixTriples
from smpc.twoparty.triples import OtCorrelations

PROVIDER_NAME = "SMPC_TWO_PARTY"
Request = tuple[str, tuple[Any, ...], dict[str, Any]]


class TwoPartyProvider(DealerTuples):
    """The two-party source of correlated randomness in one party; `connect(link)` runs
    the session's setup with the other party (base OTs, public keys)."""

    NAME = PROVIDER_NAME

    def __init__(self) -> None:
        super().__init__()
        self.ot: OtCorrelations | None = None
        self.he: MatrixTriples | None = None
        # this party's key for its shares of the weights' session masks (never sent)
        self.seed = secrets.token_bytes(KEY_BYTES)
        self._made: list[list[tuple[bytes, list[torch.Tensor]]]] = []  # per batch: (request tag, items)
        self._queue: deque[tuple[bytes, list[torch.Tensor]]] | None = None
        self._batches = 1  # the batches the offline phase makes: a weight mask's products each

    def connect(self, link: Link) -> None:
        """Set up both sources with the other party (three exchanges)."""
        generator = AesCtrGenerator()
        self.ot = OtCorrelations(link, generator)
        self.ot.setup()
        self.he = MatrixTriples(link, generator)
        self.he.setup()

    def make(self, requests: list[Request], batches: int) -> None:
        """The offline phase: every batch's items for `requests` (a traced batch), made
        with the other party now.

        Raises:
            PartyError: at both parties alike (they trace the same requests), before
                anything is made, when the run would send more than the limits allow.
        """
        check_volume(requests, batches)
        self._batches = batches
        self._made = [
            [
                (material.request_tag(kind, args, kwargs), self._fresh(kind, args, kwargs))
                for kind, args, kwargs in requests
            ]
            for _ in range(batches)
        ]
        self._sources()[1].forget_kept()  # every product with a weight's mask is made

    def next_batch(self, bucket: Any, index: int) -> None:
        """Take the items of batch `index` (made offline) from now on."""
        if self._made:
            if index >= len(self._made):
                raise PartyError(
                    f"the offline phase made material for {len(self._made)} batches, not batch {index + 1}"
                )
            self._queue = deque(self._made[index])
            self._made[index] = []  # taken: each item is used once

    def _sources(self) -> tuple[OtCorrelations, MatrixTriples]:
        if self.ot is None or self.he is None:
            raise PartyError("the two-party source is not connected to the other party")
        return self.ot, self.he

    def _shares(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if self._queue is None:
            return self._fresh(kind, args, kwargs)
        if not self._queue:
            raise PartyError(f"the offline phase made no material for this {kind} request: the batch asks for more")
        tag, items = self._queue.popleft()
        if tag != material.request_tag(kind, args, kwargs):
            raise PartyError(f"the offline phase's material is out of step with the batch at a {kind} request")
        return items

    def _fresh(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        ot, he = self._sources()
        if kind == "additive":
            size0, size1, op = args
            return list(he.triple(op, size0, size1, kwargs))
        if kind == "fixed":  # (A, C = A op B) with B the session mask of a weight
            op, x_size, name, w_size, transposed = args
            a = he.generator.ring(x_size)
            b = fixed.operand(fixed.mask_share(self.seed, name, w_size), transposed)
            return [a, he.products(op, a, b, kwargs, fixed=(name, transposed), uses=self._batches)]
        if kind == "square":
            r, r2 = ot.squares(math.prod(args[0]))
            return [r.view(args[0]), r2.view(args[0])]
        if kind == "binary":
            return self._binary(ot, *args)
        if kind == "B2A":
            arithmetic, binary = ot.shared_bits(math.prod(args[0]))
            return [binary.view(args[0]), arithmetic.view(args[0])]
        if kind == "millionaires":
            return ot.comparisons(math.prod(args[0]))
        raise PartyError(f"the two-party source cannot supply {kind} material (two parties need none)")

    @staticmethod
    def _binary(ot: OtCorrelations, size0: torch.Size, size1: torch.Size) -> list[torch.Tensor]:
        if size0 == size1:  # the common case: random-OT triples, one exchange, no corrections
            a, b, c = ot.and_triples(math.prod(size0))
            return [a.view(size0), b.view(size1), c.view(size0)]
        shape = product_size("mul", size0, size1, {})
        a, b = ot.generator.ring(size0), ot.generator.ring(size1)
        a_wide, b_wide = a.expand(shape).contiguous(), b.expand(shape).contiguous()
        return [a, b, (a_wide & b_wide) ^ ot.and_cross(a_wide, b_wide)]

    def millionaires(self, shape: torch.Size) -> list[torch.Tensor]:
        """This party's material for the comparisons of one tensor of `shape`
        (comparisons: ot, smpc.protocols.millionaires)."""
        return self._shares("millionaires", (torch.Size(shape),), {})

    def fss_key(self, kind: str, args: tuple[Any, ...]) -> Any:
        raise PartyError("comparisons: fss needs the dealer's keys; with two parties alone use comparisons: ot")


# what the offline phase may send per party: a request's messages are held in memory while
# they are exchanged (see check_volume)
REQUEST_LIMIT = 512 << 20
RUN_LIMIT = 32 << 30
# bytes a party sends per element of each OT-made kind (extension and corrections, both
# directions' share; a comparison: one 128-bit column entry per random OT of its leaves and triples)
_OT_BYTES = {
    "square": 64 * 24,
    "binary": 64 * 17,
    "B2A": 24,
    "millionaires": 16 * (millionaires.ROTS + millionaires.ANDS),
}


def request_bytes(
    kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], crossed: bool = False, batches: int = 1
) -> int:
    """The bytes a party sends to make one request's items (within a few percent), in a
    run of `batches`; `crossed`: a weight mask's ciphertexts crossed in an earlier batch
    (results only)."""
    if kind in ("additive", "fixed"):
        if kind == "additive":
            size0, size1, op = args
        else:
            op, size0, _, w_size, transposed = args
            size1 = torch.Size(reversed(w_size)) if transposed else w_size
        if op == "mul":
            return he_bytes(*bilinear.sizes(op, size0, size1, kwargs))
        uses = batches if kind == "fixed" else 1
        shapes = bilinear.matrix_shapes(op, size0, size1, kwargs)
        return sum(packed_bytes(*shape, encrypted=not (crossed and uses > 1), kept_for=uses) for shape in shapes)
    return _OT_BYTES.get(kind, 0) * int(math.prod(args[0]))


def he_bytes(terms: int, slots: int) -> int:
    """Bytes a party sends for one sum of products slot by slot: its ciphertexts, then
    its results."""
    blocks = -(-slots // N)
    return PRIMES * blocks * (terms * FRESH_BYTES + RESULT_BYTES)


def packed_bytes(n: int, k: int, m: int, encrypted: bool = True, kept_for: int = 1) -> int:
    """Bytes a party sends for one [n, k] by [k, m] product in Cheetah's packing, B's
    ciphertexts serving `kept_for` products (a weight mask's, one a batch); without them
    when not `encrypted` (from the second batch on)."""
    n_w, k_w, m_w = packing.plan(n, k, m, kept_for)
    blocks_m = -(-m // m_w)
    return PRIMES * blocks_m * (encrypted * -(-k // k_w) * FRESH_BYTES + -(-n // n_w) * RESULT_BYTES)


def check_volume(requests: list[Request], batches: int) -> None:
    """Refuse, in one line, a run whose offline phase would send more than RUN_LIMIT per
    party, or more than REQUEST_LIMIT for one request."""
    sizes = [(request_bytes(kind, args, kwargs, batches=batches), kind, args) for kind, args, kwargs in requests]
    later = sum(request_bytes(kind, args, kwargs, crossed=True, batches=batches) for kind, args, kwargs in requests)
    total = sum(size for size, _, _ in sizes) + (batches - 1) * later
    largest = max(sizes, default=(0, "", ()), key=lambda item: item[0])
    if total <= RUN_LIMIT and largest[0] <= REQUEST_LIMIT:
        return
    _, kind, args = largest
    what = _describe(kind, args)
    raise PartyError(
        f"randomness: two-party: this run's offline phase would send {total / 2**30:.1f} GiB per party "
        f"({batches} batches; its largest request, {what}, {largest[0] / 2**30:.2f} GiB a batch), past what it "
        f"makes today ({RUN_LIMIT >> 30} GiB a run, {REQUEST_LIMIT >> 20} MiB a request); use randomness: dealer "
        "for this model"
    )


def _describe(kind: str, args: tuple[Any, ...]) -> str:
    # a request as the refusal names it: "conv2d of [60, 16, 8, 8]", "square of [60, 512]"
    if kind == "additive":
        return f"{args[2]} of {list(args[0])}"
    if kind == "fixed":
        return f"{args[0]} of {list(args[1])} with weight {args[2]}"
    return f"{kind} of {list(args[0])}"


class _Recorder(TracingProvider):
    """The dealer's tracing provider, keeping the requests only (no material)."""

    def _record(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.requests.append((kind, args, kwargs))

    def millionaires(self, shape: torch.Size) -> None:
        self._record("millionaires", (torch.Size(shape),), {})


def trace_requests(config: Config, program: Program, checks: Any = None) -> list[Request]:
    """The requests of one batch of `program`, from the dealer's shape-only run in this
    party (its CrypTen generators and provider are put back afterwards)."""
    import crypten

    saved = {key: dict(crypten.generators[key]) for key in ("prev", "next", "local", "global")}
    provider = crypten.cfg.mpc.provider
    recorder = _Recorder([], lambda tag, items: None, material.FixedMasks([]))
    crypten.cfg.mpc.provider = DEALER_PROVIDER  # shape_run registers the recorder under the dealer's name
    try:
        with meter.suspended():
            shape_run(config, program, recorder, checks)
    finally:
        crypten.cfg.mpc.provider = provider
        for key, generators in saved.items():
            crypten.generators[key].update(generators)
    return recorder.requests
