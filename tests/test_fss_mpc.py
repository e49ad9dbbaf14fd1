"""`protocol.comparisons: fss` on shares: every converter feature, and each gate through
CrypTen's API, in two real party processes over gloo.

The keys come from a stand-in dealer inside each party (harness.use_stand_in_dealer);
whole runs with the real dealer are in test_fss_runs.py.
"""

from __future__ import annotations

import pytest
import torch

from harness import run_parties, use_stand_in_dealer
from op_cases import CASES


def _op_cases(rank: int, world_size: int, names: list[str]) -> dict[str, float]:
    from test_ops_mpc import evaluate_all_cases

    use_stand_in_dealer(rank, truncation="dealer")  # exact: see test_ops_mpc.evaluate_with_exact_truncation
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
    from smpc import meter

    use_stand_in_dealer(rank)
    unit = 2.0**-16
    # edge values at 16 fractional bits: 0, one unit either side, the largest magnitudes
    # the encoder holds safely, and ties for max/argmax
    x = torch.tensor(
        [[0.0, unit, -unit, 3.5, -3.5, 2.0**30, -(2.0**30), 1.0], [-2.0, -2.0, -7.0, -2.0, -9.0, -2.0, -100.0, -50.0]]
    )
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
    return {"x": x, "opened": opened, "relu_rounds": relu_rounds, "rounds": before, "meter": meter.protocols().record()}


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
    assert torch.equal(
        got["argmax"], torch.tensor([[0, 0, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float)
    )
    assert torch.equal(got["argmax_index"], torch.tensor([5.0, 0.0]))
    assert float(got["max_all"]) == 2.0**30
    assert torch.equal(got["pool"], torch.nn.functional.max_pool2d(x.view(1, 1, 2, 8), 2))
    assert torch.equal(got["abs"], x.abs())
    product = x * x / 4
    small = x.abs() < 2**7  # the product of the two large values leaves the ring's range
    assert (got["product"] - product)[small].abs().max() <= 2 * unit
    assert result["relu_rounds"] == 1, "ReLU takes one round"
    assert result["meter"]["comparisons_rounds"] > 0 and result["meter"]["truncations_rounds"] > 0


def _wide_products(rank: int, world_size: int, truncation: str) -> dict:
    import crypten

    use_stand_in_dealer(rank, "circuits", truncation)
    # |x|^2 about 2^29: held at scale 2^32 before truncation, the product is near 2^61,
    # where CrypTen's local two-party truncation goes wrong with probability |x| / 2^64
    x = torch.linspace(20000.0, 23000.0, 1000) * torch.tensor([1.0, -1.0]).repeat(500)
    square = crypten.cryptensor(x, src=0) * crypten.cryptensor(x, src=0)
    return {"x": x, "square": square.get_plain_text()}


@pytest.mark.parametrize("truncation", ["local", "dealer"])
def test_the_dealer_truncation_holds_up_to_the_top_of_the_ring_where_crypten_wraps(truncation):
    result = run_parties(_wide_products, 2, truncation, timeout=300)[0]
    x, got = result["x"].double(), result["square"].double()
    exact = torch.trunc(x * 2**16) ** 2 / 2**32
    error = (got - exact).abs()
    wrong = int((error > 1e6).sum())  # a wrap is off by 2^64 / 2^16 units: 2^32
    if truncation == "dealer":  # within a unit, and float32's rounding of the opened value
        assert wrong == 0 and bool((error <= exact * 2.0**-23 + 2 * 2.0**-16).all()), float(error.max())
    else:  # what protocol.truncation: dealer is for: about one element in ten is off by 2^32
        assert wrong > 20, wrong
