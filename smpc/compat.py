"""The patches: the one place where CrypTen 0.4.1 is made to work on torch 2.13 (and
made safe and lean: its pickle loaders refused, its randomness from a CSPRNG, its
bookkeeping cut, its products metered, its waits bounded).

Every patch says what upstream broke and since when. `apply()` is idempotent; it runs
when this module is first imported, and again (doing nothing) when a smpc.runtime.Runtime
is built. A module with `import crypten` at its top needs the patches before that line,
so every smpc module that uses CrypTen imports `smpc.compat` first (tests/test_imports.py
checks it): any process that reaches CrypTen through smpc gets a working `crypten`, while
`import smpc` alone imports neither. This is the bottom layer; nothing here holds a
session's state (smpc.communicator sets the waits' bounds on the torch.distributed that
CrypTen sees, for a session's length). Nothing in site-packages is edited.
"""

from __future__ import annotations

import datetime
import sys
import types
from typing import Any
from collections.abc import Callable

_applied = False


def _stub_onnx_converter() -> None:
    # crypten/nn/onnx_converter.py (CrypTen's model import through ONNX) imports
    # `torch.onnx.symbolic_registry`, else `torch.onnx._internal.registration`: both are
    # gone by torch 2.13, so `import crypten` fails; it also imports `onnx`, 0.8 s of
    # every process's start. smpc converts models itself (smpc/model/convert.py) and never
    # calls it: crypten.nn gets a stand-in whose converters refuse by name.
    name = "crypten.nn.onnx_converter"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)

    def converter(what: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"crypten.nn.{what} is not available with smpc: convert models with smpc.model.convert")

        return refuse

    stub.from_onnx = converter("from_onnx")  # type: ignore[attr-defined]
    stub.from_pytorch = converter("from_pytorch")  # type: ignore[attr-defined]
    stub.from_tensorflow = converter("from_tensorflow")  # type: ignore[attr-defined]
    stub.TF_AND_TF2ONNX = False  # type: ignore[attr-defined]
    sys.modules[name] = stub


class _DistWithTimeout(types.ModuleType):
    """torch.distributed as CrypTen sees it, with a bounded timeout on every group.

    CrypTen's DistributedCommunicator calls init_process_group/new_group without a
    timeout, so gloo waits 30 minutes on a silent peer. All other attributes are
    torch.distributed's own.
    """

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__("torch.distributed")
        self._real = real
        # Set for a session by smpc.communicator.gloo: the bound on joining the default
        # group, the bound on every op of the groups CrypTen creates afterwards, and the
        # TCP store of smpc's roll call (smpc.session), reused as gloo's rendezvous.
        self.connect_timeout: datetime.timedelta | None = None
        self.group_timeout: datetime.timedelta | None = None
        self.store: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def init_process_group(self, *args: Any, **kwargs: Any) -> Any:
        if self.connect_timeout is not None:
            kwargs.setdefault("timeout", self.connect_timeout)
        if self.store is not None:  # the store every party already joined, not a second rendezvous
            kwargs.pop("init_method", None)
            kwargs["store"] = self.store
        return self._real.init_process_group(*args, **kwargs)

    def new_group(self, *args: Any, **kwargs: Any) -> Any:
        if self.group_timeout is not None:
            kwargs.setdefault("timeout", self.group_timeout)
        return self._real.new_group(*args, **kwargs)

    def all_reduce(self, tensor: Any, op: Any = None, group: Any = None, async_op: bool = False) -> Any:
        # Between two parties a sum (or xor) of shares is one exchange: each sends its
        # tensor and combines the other's. gloo's all_reduce runs a ring algorithm of
        # several steps instead: measured here through CrypTen, 1.7 ms for 1,000 elements
        # against 0.6 ms for the exchange, the same bytes; every opening of a share is one.
        real = self._real
        op = real.ReduceOp.SUM if op is None else op
        combine = _combiner(real, op)
        peer = self._peer(group) if combine is not None else None
        if peer is None:
            return real.all_reduce(tensor, op=op, group=group, async_op=async_op)
        exchange = _Exchange(real, tensor, peer, group, combine)
        if async_op:
            return exchange
        exchange.wait()
        return None

    def _peer(self, group: Any) -> int | None:
        # the other rank of a two-rank group (global rank), else None
        ranks = self._real.get_process_group_ranks(group if group is not None else self._real.group.WORLD)
        if len(ranks) != 2:
            return None
        me = self._real.get_rank()
        peer: int = ranks[1] if ranks[0] == me else ranks[0]
        return peer


class _Exchange:
    """One two-party all_reduce in flight: our tensor sent, theirs being received; wait()
    combines theirs into ours (in place, as all_reduce does)."""

    def __init__(self, real: Any, tensor: Any, peer: int, group: Any, combine: Any) -> None:
        import torch

        self._tensor, self._combine = tensor, combine
        self._theirs = torch.empty(tensor.shape, dtype=tensor.dtype)
        self._out = tensor.contiguous()  # gloo sends contiguous memory; kept until sent
        self._sent = real.isend(self._out, peer, group=group)
        self._received = real.irecv(self._theirs, peer, group=group)

    def wait(self, timeout: Any = None) -> bool:
        # gloo bounds both waits by the group's timeout (timeouts.op_s, set in new_group)
        self._sent.wait()  # ours must be out before it is overwritten
        self._received.wait()
        self._combine(self._tensor, self._theirs)
        return True

    def is_completed(self) -> bool:
        done: bool = self._sent.is_completed() and self._received.is_completed()
        return done


def _combiner(real: Any, op: Any) -> Any:
    # how an exchange combines the other party's tensor into ours, for the reductions
    # that CrypTen's openings use (arithmetic shares: sum; binary shares: xor)
    import torch

    if op == real.ReduceOp.SUM:
        return torch.Tensor.add_
    if op == real.ReduceOp.BXOR:
        return torch.Tensor.bitwise_xor_
    return None


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} unpickles files and is disabled by smpc; use safetensors (smpc.artifacts)")

    return refuse


def _decode(self: Any, tensor: Any) -> Any:
    # FixedPointEncoder.decode in CrypTen 0.4.1 floors negative values by scale - 1
    # instead of scale, so a negative value just above an integer in magnitude
    # (e.g. -24.9997) decodes 1.0 too low (-25.9997). An upstream bug on every torch
    # version; found by the digits demo. Exact floor division by the scale instead.
    if tensor is None:
        return None
    import torch

    if tensor.dtype != torch.long:
        raise TypeError("input must be a LongTensor")
    if self._scale == 1:
        return tensor.data
    quotient = tensor.div(self._scale, rounding_mode="floor")
    remainder = tensor - quotient * self._scale
    return (quotient.float() + remainder.float() / self._scale).data


def apply() -> None:
    """Make `import crypten` work on this torch and close its unsafe loaders. Idempotent."""
    global _applied
    if _applied:
        return
    _stub_onnx_converter()

    import torch.distributed as real_dist

    import crypten
    import crypten.communicator.distributed_communicator as dc
    from crypten.encoder import FixedPointEncoder

    dc.dist = _DistWithTimeout(real_dist)
    FixedPointEncoder.decode = _decode
    # crypten.load / crypten.load_from_party unpickle arbitrary objects (and since
    # torch 2.6 plain torch.load defaults to weights_only=True, which breaks them
    # anyway): no smpc path needs them, and a pickle must never cross a party boundary.
    crypten.load = _refuse("crypten.load")
    crypten.load_from_party = _refuse("crypten.load_from_party")
    _secure_randomness(crypten)
    _fast_config()
    _metered_products()
    _lean_bookkeeping(dc.DistributedCommunicator)
    _sent_bytes(dc.DistributedCommunicator)
    _applied = True


def _lean_bookkeeping(communicator: Any) -> None:
    # Not fixes: CrypTen's per-op bookkeeping, which costs a large share of a small
    # op's time (a round of one element took about 2 ms here, a third of it outside
    # the exchange). Same results, less work:
    # - MPCTensor.shallow_copy (every in-place op and many others) builds MPCTensor([]),
    #   a sharing of an empty tensor: an encoding and a zero-sharing draw, thrown away;
    # - the communicator's rank and world size are asked of torch.distributed (through
    #   a check that it is initialized) on every op: the communicator knows both.
    from crypten.cryptensor import CrypTensor
    from crypten.mpc import MPCTensor

    def shallow_copy(self: Any) -> Any:
        result = object.__new__(MPCTensor)
        CrypTensor.__init__(result, requires_grad=False)
        result._tensor = self._tensor
        result.ptype = self.ptype
        return result

    MPCTensor.shallow_copy = shallow_copy
    communicator.get_rank = lambda self: self.rank
    communicator.get_world_size = lambda self: self.world_size


def _sent_elements(name: str, rank: int, world: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    # the ring elements this party puts on the wire for one collective of CrypTen's
    def count(value: Any) -> int:
        batched = kwargs.get("batched", False)
        return sum(t.nelement() for t in value) if batched else int(value.nelement())

    if name in ("send", "isend"):
        return count(args[0])
    if name == "scatter":
        return sum(t.nelement() for i, t in enumerate(args[0]) if i != rank) if args[1] == rank else 0
    if name in ("reduce", "gather"):  # every party but the root sends its tensor
        return count(args[0]) if args[1] != rank else 0
    if name == "broadcast":
        return (world - 1) * count(args[0]) if args[1] == rank else 0
    if name == "all_reduce":  # two parties: one exchange (_DistWithTimeout); more: gloo's ring
        return count(args[0]) if world == 2 else 2 * (world - 1) / world * count(args[0])
    if name == "all_gather":  # a ring: each party passes on every other party's tensor once
        return (world - 1) * count(args[0])
    return 0  # recv, irecv, barrier


def _sent_bytes(communicator: Any) -> None:
    # A fix: a party's `bytes` (every report's bytes_sent) are what it sends. CrypTen's
    # bookkeeping books an all_reduce as 2n elements (sent and received, as a ring of two
    # would) and a received broadcast or gather as sent: over gloo, every opening of two
    # parties counted twice what crossed the wire (smpc's TLS mesh counts the bytes it
    # writes). Each collective is wrapped again around CrypTen's undecorated method, with
    # CrypTen's rounds and time; the objects' methods (pickle) are refused anyway.
    import timeit

    from crypten.config import cfg

    for name in (
        "send",
        "isend",
        "recv",
        "irecv",
        "scatter",
        "reduce",
        "all_reduce",
        "gather",
        "all_gather",
        "broadcast",
        "barrier",
    ):
        method = getattr(communicator, name)
        unwrapped = getattr(method, "__wrapped__", None)
        if unwrapped is None:  # applied already
            continue

        def booked(
            self: Any, *args: Any, _name: str = name, _decorated: Any = method, _method: Any = unwrapped, **kwargs: Any
        ) -> Any:
            if self.world_size < 2 or not cfg.communicator.verbose:  # CrypTen's wrapper decides
                return _decorated(self, *args, **kwargs)
            self.comm_rounds += 1
            self.comm_bytes += _sent_elements(_name, self.rank, self.world_size, args, kwargs) * self.BYTES_PER_ELEMENT
            started = timeit.default_timer()
            result = _method(self, *args, **kwargs)
            self.comm_time += timeit.default_timer() - started
            return result

        setattr(communicator, name, booked)


def _metered_products() -> None:
    # Not a fix: CrypTen's Beaver products (every mul, matmul and convolution of two
    # secrets, and squares) are booked as the piece "products" of the op that runs them
    # (smpc.meter's cost profile). The module's mul/matmul/conv* look the protocol up
    # in the module's globals at call time, so replacing it there reaches all of them.
    from crypten.mpc.primitives import beaver

    from smpc import meter

    protocol, square = beaver.__dict__["__beaver_protocol"], beaver.square

    def beaver_protocol(op: str, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        with meter.piece("products") as piece:
            result = protocol(op, x, y, *args, **kwargs)
            piece.elements = result.numel()
        return result

    def metered_square(x: Any) -> Any:
        with meter.piece("products") as piece:
            result = square(x)
            piece.elements = result.numel()
        return result

    beaver.__dict__["__beaver_protocol"] = beaver_protocol
    beaver.square = metered_square


class _CachedSection:
    """One section of CrypTen's config (e.g. `cfg.encoder`) with its values cached; writes
    go through to the OmegaConf node and drop the cached value."""

    __slots__ = ("_node", "_values")

    def __init__(self, node: Any) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, name: str) -> Any:
        values = self._values
        try:
            return values[name]
        except KeyError:
            pass
        from omegaconf import DictConfig

        value = getattr(self._node, name)
        if isinstance(value, DictConfig):
            value = _CachedSection(value)
        values[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._node, name, value)
        self._values.pop(name, None)

    __getitem__ = __getattr__
    __setitem__ = __setattr__


def _fast_config() -> None:
    # Every CrypTen operation reads its config (`cfg.debug.validation_mode` on each
    # attribute of each CrypTensor, `cfg.mpc.protocol`, `cfg.encoder.precision_bits`,
    # ...) through OmegaConf, about 60 µs a read: measured here, over half the CPU time
    # of a transformer's forward pass on shares. Reads are served from a cache of each
    # section instead. CrypTen changes its config only by replacing the whole OmegaConf
    # object (`cfg.x.y = v` merges into a new one; `temp_override` swaps it and back),
    # so the cache is kept per config object; writes through a cached section
    # (`cfg.encoder.precision_bits = 16`) reach the OmegaConf node and drop the value.
    from crypten.config.config import CrypTenConfig

    original = CrypTenConfig.__getattribute__
    if getattr(original, "_smpc_cached", False):
        return
    sections: dict[str, Any] = {}
    owner: list[Any] = [None]  # the config object the cached sections belong to

    def __getattribute__(self: Any, name: str) -> Any:
        if name.startswith("_") or name in _CONFIG_OWN:
            return original(self, name)
        config = object.__getattribute__(self, "config")
        if owner[0] is not config:
            sections.clear()
            owner[0] = config
        try:
            return sections[name]
        except KeyError:
            pass
        value = original(self, name)
        if "." not in name:
            from omegaconf import DictConfig

            if isinstance(value, DictConfig):
                value = _CachedSection(value)
            sections[name] = value
        return value

    __getattribute__._smpc_cached = True  # type: ignore[attr-defined]
    CrypTenConfig.__getattribute__ = __getattribute__


# CrypTenConfig's own attributes (methods and its `config`): never sections of the config
_CONFIG_OWN = frozenset({"config", "load_config", "set_config", "temp_override"})


def _secure_randomness(crypten: types.ModuleType) -> None:
    # CrypTen draws every share, mask and zero-sharing with torch.randint from
    # torch.Generator (a Mersenne Twister: its whole state follows from 624 outputs),
    # seeded with 64 bits. Its two helpers are imported by name into the modules that
    # draw; each binding is replaced by smpc's AES-256-CTR generator, and the seed
    # exchange (crypten._setup_prng, called by crypten.init and smpc.communicator.installed)
    # by one of 256-bit keys.
    from crypten.common import rng
    from crypten.mpc.primitives import arithmetic, binary
    from crypten.mpc.provider import tfp_provider, ttp_provider

    import torch

    from smpc.protocols import csprng

    for module in (rng, arithmetic, binary, tfp_provider, ttp_provider):
        module.generate_random_ring_element = csprng.ring_element
        module.generate_kbit_random_tensor = csprng.kbit_tensor
    crypten._setup_prng = _setup_prng  # type: ignore[attr-defined]  # a private CrypTen function, replaced
    cpu = torch.device("cpu")
    for key in crypten.generators:  # until a session sets them up: private, fresh keys
        crypten.generators[key][cpu] = csprng.AesCtrGenerator()


def _setup_prng() -> None:
    """CrypTen's four streams, keyed with 256 bits each: `next` (a key this party makes
    and sends to the next party), `prev` (the key received from the previous party;
    with `next`, the pairwise zero-sharings), `global` (party 0's key, broadcast) and
    `local` (this party's alone). Keys travel as four int64 over the session's channel."""
    import secrets

    import crypten
    import crypten.communicator as comm
    import torch

    from smpc.protocols import csprng

    def as_tensor(key: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(key), dtype=torch.int64).clone()

    def as_key(tensor: torch.Tensor) -> bytes:
        return tensor.contiguous().numpy().tobytes()

    communicator = comm.get()
    world, rank = communicator.get_world_size(), communicator.get_rank()
    next_key, local_key, global_key = (secrets.token_bytes(csprng.KEY_BYTES) for _ in range(3))
    prev = torch.zeros(csprng.KEY_BYTES // 8, dtype=torch.int64)
    if world >= 2:
        sent = communicator.isend(as_tensor(next_key), (rank + 1) % world)
        received = communicator.irecv(prev, src=(rank - 1) % world)
        sent.wait()
        received.wait()
        prev_key = as_key(prev)
    else:
        prev_key = next_key
    global_key = as_key(communicator.broadcast(as_tensor(global_key), 0))
    cpu = torch.device("cpu")
    for name, key in (("prev", prev_key), ("next", next_key), ("local", local_key), ("global", global_key)):
        crypten.generators[name][cpu] = csprng.AesCtrGenerator(key)


# see the module's docstring: importing smpc.compat is what makes `import crypten` work
apply()
