"""The dealer's offline trace: the model run once on shapes only, recording every request.

CrypTen's protocols do not branch on values, so a run over a communicator that moves no
data (`ShapeCommunicator`) requests exactly the tuples and FSS keys a party's batch
requests, in the same order; `TracingProvider` records them and emits their material as
it goes (batch 0), and the dealer replays the list for every later batch.
"""

from __future__ import annotations

import time
from typing import Any
from collections.abc import Callable

import torch

from smpc import communicator, compat  # noqa: F401  (compat first: it makes crypten importable on this torch)
from smpc.config import Config
from smpc.model.program import Program
from smpc.dealer import material
from smpc.dealer.provider import PROVIDER_NAME, DealerTuples
from smpc.model.execute import run_program
from smpc.model import calibrate
from smpc.protocols import fixed, switches, top_k
from smpc.protocols.csprng import AesCtrGenerator

Emit = Callable[[bytes, dict[int, torch.Tensor]], None]


class ShapeCommunicator:
    """A stand-in for CrypTen's communicator that moves no data: every collective
    returns a tensor of the right shape."""

    def __init__(self, world_size: int, rank: int = 0) -> None:
        self.world_size, self.rank = world_size, rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_rank(self) -> int:
        return self.rank

    def all_reduce(self, input: Any, op: Any = None, batched: bool = False) -> Any:
        return [t.clone() for t in input] if batched else input.clone()

    def reduce(self, input: Any, dst: int, op: Any = None, batched: bool = False) -> Any:
        return self.all_reduce(input, batched=batched)

    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:
        return input

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor.clone() for _ in range(self.world_size)]

    def gather(self, tensor: torch.Tensor, dst: int) -> list[torch.Tensor]:
        return self.all_gather(tensor)

    def scatter(
        self, scatter_list: list[torch.Tensor], src: int, size: Any = None, async_op: bool = False
    ) -> torch.Tensor:
        return scatter_list[self.rank].clone() if src == self.rank else torch.zeros(size, dtype=torch.long)

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        return None

    def recv(self, tensor: torch.Tensor, src: Any = None) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        return None


class TracingProvider(DealerTuples):
    """Inside the dealer: records the requests of a shape-only run and emits their
    material (`emit(request digest, {rank: tensor})`). The run itself gets zeros (its
    tuples) or None (its FSS keys): only shapes matter to it."""

    NAME = PROVIDER_NAME
    tracing = True

    def __init__(self, generators: list[AesCtrGenerator], emit: Emit, masks: material.FixedMasks | None = None) -> None:
        super().__init__()
        self.generators = generators
        self.emit = emit
        self.masks = masks
        self.requests: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _record(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.requests.append((kind, args, kwargs))
        self.emit(
            material.request_tag(kind, args, kwargs), material.material(kind, self.generators, args, kwargs, self.masks)
        )

    def _shares(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        self._record(kind, args, kwargs)
        return [torch.zeros(size, dtype=torch.long) for size, _ in material.spec(kind, args, kwargs)]

    def fss_key(self, kind: str, args: tuple[Any, ...]) -> Any:
        self._record(kind, args, {})
        return None


def replay(
    requests: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
    generators: list[AesCtrGenerator],
    emit: Emit,
    masks: material.FixedMasks | None = None,
) -> float:
    """Emit the material of a traced batch again, from the generators of another batch.

    Returns:
        The seconds spent generating it (not sending it).
    """
    generating = 0.0
    for kind, args, kwargs in requests:
        began = time.perf_counter()
        items = material.material(kind, generators, args, kwargs, masks)
        generating += time.perf_counter() - began
        emit(material.request_tag(kind, args, kwargs), items)
    return generating


def shape_run(config: Config, program: Program, provider: TracingProvider, checks: Any = None) -> None:
    """The same sequence of secret operations as a party's batch, on zeros."""
    import crypten

    crypten_generators = crypten.generators
    for key in ("prev", "next", "local", "global"):  # fresh keys: these values are thrown away
        crypten_generators[key][torch.device("cpu")] = AesCtrGenerator()
    owner = config.rank_of(config.model_owner.name)
    with communicator.substituted(ShapeCommunicator(len(config.parties))):
        switches.register_provider(PROVIDER_NAME, provider)
        params = {k: crypten.cryptensor(torch.zeros_like(v), src=owner) for k, v in sorted(program.secret.items())}
        if provider.masks is not None:  # the parties' products with a fixed operand (on zeros)
            params = fixed.fused_params(program, params)
            params.update(
                {
                    k: fixed.FixedWeight(
                        k, params[k], torch.zeros_like(params[k].share), torch.zeros_like(params[k].share)
                    )
                    for k in fixed.fixed_names(program)
                }
            )
        inputs = {spec.name: crypten.cryptensor(torch.zeros(spec.share_shape), src=0) for spec in program.inputs}
        # the parties' range checks spend material too (`checks`, not enforced: on zeros
        # they must not stop anything)
        outputs = run_program(
            program, params, inputs, checks=checks, widths=calibrate.comparison_widths(config, program)
        )
        for k in top_k.reveal_kinds(config):  # what the parties compute before revealing classes
            top_k.top_k(outputs[0], k)
