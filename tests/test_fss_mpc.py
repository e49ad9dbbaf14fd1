"""`protocol.comparisons: fss` on shares: every converter feature, and each gate through
CrypTen's API, in two real party processes over gloo.

The keys come from a stand-in dealer inside each party (`_LocalDealer`): both parties
hold both dealer streams, so each can make the dealer's material itself (insecure, and
only here: it lets the protocol layer run without a dealer process; whole runs with
the real dealer are in test_fss_runs.py).
"""

from __future__ import annotations

import pytest
import torch

from harness import run_parties
from op_cases import CASES

_SEEDS = (b"\x01" * 32, b"\x02" * 32)


def _use_local_dealer(rank: int) -> None:
    import crypten

    from smpc import compat
    from smpc.dealer import material
    from smpc.dealer.provider import DealerTuples

    class _LocalDealer(DealerTuples):
        """The dealer's material made in the party: every request, both ranks' items."""

        def __init__(self) -> None:
            super().__init__()
            self.dealer = [material.seeded(s) for s in _SEEDS]
            self.own = material.seeded(_SEEDS[rank])

        def _item(self, kind, args, kwargs):
            return material.material(kind, self.dealer, args, kwargs).get(rank)

        def _shares(self, kind, args, kwargs):
            item = self._item(kind, args, kwargs)
            shares = material.draw(kind, self.own, rank, args, kwargs)
            return shares + ([item] if rank == 0 else [])

        def fss_key(self, kind, args):
            from smpc.protocols import fss

            return fss.party_key(kind, self.own, rank, args, self._item(kind, args, {}))

    compat.register_provider("TEST_DEALER", _LocalDealer())
    crypten.cfg.mpc.provider = "TEST_DEALER"
    compat.use_comparisons("fss")


def _op_cases(rank: int, world_size: int, names: list[str]) -> dict[str, float]:
    from test_ops_mpc import evaluate_all_cases

    _use_local_dealer(rank)
    return evaluate_all_cases(rank, world_size, names)


@pytest.fixture(scope="module")
def fss_errors():
    return run_parties(_op_cases, 2, sorted(CASES), timeout=600)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_plaintext_with_fss(fss_errors, name):
    tol = CASES[name][2]
    assert fss_errors[0][name] <= tol, f"{name}: max |error| {fss_errors[0][name]:.4g} > {tol}"
    assert fss_errors[1][name] is None, "the non-receiving party must learn nothing"


def _gates(rank: int, world_size: int) -> dict:
    import crypten

    from smpc import session
    from smpc.meter import protocol_meter

    _use_local_dealer(rank)
    unit = 2.0**-16
    # edge values at 16 fractional bits: 0, one unit either side, the largest magnitudes
    # the encoder holds safely, and ties for max/argmax
    x = torch.tensor([[0.0, unit, -unit, 3.5, -3.5, 2.0**30, -(2.0**30), 1.0],
                      [-2.0, -2.0, -7.0, -2.0, -9.0, -2.0, -100.0, -50.0]])
    secret = crypten.cryptensor(x, src=0)
    before = session.communication_stats()["rounds"]
    out = {
        "relu": secret.relu(),
        "lt": secret.lt(0.5),
        "ge": secret.ge(-unit),
        "eq": secret.eq(-2.0),
        "max": secret.max(dim=1)[0],
        "argmax": secret.argmax(dim=1),
        "argmax_index": secret.argmax(dim=1, one_hot=False),
        "max_all": secret.max(),
        "pool": secret.view(1, 1, 2, 8).max_pool2d(2),
        "abs": secret.abs(),
        "product": secret * secret.div(4),
    }
    relu_rounds = None
    start = session.communication_stats()["rounds"]
    secret.relu()
    relu_rounds = session.communication_stats()["rounds"] - start
    opened = {k: v.get_plain_text() for k, v in out.items()}
    return {"x": x, "opened": opened, "relu_rounds": relu_rounds, "rounds": before, "meter": protocol_meter.record()}


def test_each_gate_through_crypten_with_fss():
    result = run_parties(_gates, 2, timeout=300)[0]
    x, got = result["x"], result["opened"]
    unit = 2.0**-16
    assert torch.equal(got["relu"], torch.relu(x))
    assert torch.equal(got["lt"], (x < 0.5).float())
    assert torch.equal(got["ge"], (x >= -unit).float())
    assert torch.equal(got["eq"], (x == -2.0).float())
    assert torch.equal(got["max"], x.max(dim=1).values)
    # ties go to the first maximal position
    assert torch.equal(got["argmax"], torch.tensor([[0, 0, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float))
    assert torch.equal(got["argmax_index"], torch.tensor([5.0, 0.0]))
    assert float(got["max_all"]) == 2.0**30
    assert torch.equal(got["pool"], torch.nn.functional.max_pool2d(x.view(1, 1, 2, 8), 2))
    assert torch.equal(got["abs"], x.abs())
    product = x * x / 4
    small = x.abs() < 2**7  # the product of the two large values leaves the ring's range
    assert (got["product"] - product)[small].abs().max() <= 2 * unit
    assert result["relu_rounds"] == 1, "ReLU takes one round"
    assert result["meter"]["comparisons_rounds"] > 0 and result["meter"]["truncations_rounds"] > 0
