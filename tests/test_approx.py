"""Every approximation of smpc.protocols.approx swept over the whole range it covers,
edge values included, on shares in two real party processes with the protocols a
two-party run with a dealer uses by default (CrypTen's comparison circuits, the dealer's
truncation; a stand-in dealer in each party); the worst error of each is the figure
the range table of docs/explanation/models.md shows (`python benchmarks/approximations.py`
writes it)."""

from __future__ import annotations

import pytest
import torch

from approx_cases import SWEEPS, layer_norm_rows, small_variance_rows, softmax_rows
from harness import run_parties, use_stand_in_dealer


# a LayerNorm's weight across a row of 64: signs and magnitudes as in real checkpoints
GAMMA = torch.linspace(-2.0, 3.0, 64)


def _evaluate(rank: int, world_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    import crypten

    def secret(value: torch.Tensor):
        return crypten.cryptensor(value, src=0)

    # CrypTen's local truncation would wrap now and then at the top of these sweeps
    # (LayerNorm's squares of values near 3e3): see test_fss_mpc's wide products
    use_stand_in_dealer(rank, "circuits", "dealer")

    from smpc.protocols import approx

    functions = {
        "gelu (erf)": approx.gelu,
        "gelu (tanh)": lambda x: approx.gelu(x, "tanh"),
        "gelu near 0": approx.gelu,
        "silu": approx.silu,
        "tanh": approx.tanh,
        "sigmoid": approx.sigmoid,
        "exp": approx.exp,
        "reciprocal": approx.reciprocal,
        "inv_sqrt": approx.inv_sqrt,
        "sqrt": approx.sqrt,
        "layer_norm": lambda x: approx.normalize(x, [1], 1e-5, center=True),
        # a large eps (the level is that of var + eps) and variances down to 4e-6
        "layer_norm eps 0.1": lambda x: approx.normalize(x, [1], 0.1, center=True),
        "layer_norm small variance": lambda x: approx.normalize(x, [1], 1e-12, center=True),
        "rms_norm": lambda x: approx.normalize(x, [1], 1e-6, center=False),
        # a secret weight multiplied in the rounds of the first Newton step
        "layer_norm weighted": lambda x: approx.normalize(x, [1], 1e-5, center=True, weight=secret(GAMMA)),
        "rms_norm weighted": lambda x: approx.normalize(x, [1], 1e-6, center=False, weight=secret(GAMMA)),
        "softmax": lambda x: approx.softmax(x, 1),
    }
    inputs = {name: build() for name, (build, *_rest) in SWEEPS.items()}
    inputs.update(layer_norm=layer_norm_rows(), rms_norm=layer_norm_rows(), softmax=softmax_rows())
    inputs["layer_norm eps 0.1"] = layer_norm_rows()
    inputs["layer_norm small variance"] = small_variance_rows()
    inputs["layer_norm weighted"] = inputs["rms_norm weighted"] = layer_norm_rows()
    return {name: (x, functions[name](crypten.cryptensor(x, src=0)).get_plain_text()) for name, x in inputs.items()}


def _exact(name: str, x: torch.Tensor) -> torch.Tensor:
    x = torch.trunc(x.double() * 2**16) / 2**16  # the input as CrypTen encodes it
    gamma = torch.trunc(GAMMA.double() * 2**16) / 2**16
    if name == "layer_norm weighted":
        return torch.nn.functional.layer_norm(x, (x.size(1),), eps=1e-5) * gamma
    if name == "rms_norm weighted":
        return torch.nn.functional.rms_norm(x, (x.size(1),), eps=1e-6) * gamma
    if name.startswith("layer_norm"):
        eps = {"layer_norm": 1e-5, "layer_norm eps 0.1": 0.1, "layer_norm small variance": 1e-12}[name]
        return torch.nn.functional.layer_norm(x, (x.size(1),), eps=eps)
    if name == "rms_norm":
        return torch.nn.functional.rms_norm(x, (x.size(1),), eps=1e-6)
    if name == "softmax":
        return torch.softmax(x, 1)
    return SWEEPS[name][1](x)


def worst_errors(results: dict) -> dict[str, float]:
    """Worst error per function (relative ones as in approx_cases.SWEEPS)."""
    out = {}
    for name, (x, got) in results.items():
        exact = _exact(name, x)
        err = (got.double() - exact).abs()
        if name in SWEEPS and SWEEPS[name][2] == "relative":
            err = err / exact.abs().clamp_min(0.01)
        out[name] = float(err.max())
    return out


TOLERANCES = {name: spec[3] for name, spec in SWEEPS.items()} | {
    "layer_norm": 3e-3,
    "layer_norm eps 0.1": 3e-3,
    "rms_norm": 3e-3,
    # three times the unweighted bound: |weight| reaches 3
    "layer_norm weighted": 9e-3,
    "rms_norm weighted": 9e-3,
    "softmax": 5e-4,
    # a row of standard deviation 2e-3 is only 131 units of 2^-16 wide: its normalized
    # values carry that quantization (about 1/131 of a standard deviation at the worst)
    "layer_norm small variance": 1e-2,
}


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    return worst_errors(run_parties(_evaluate, 2, timeout=600)[0])


@pytest.mark.parametrize("name", sorted(TOLERANCES))
def test_approximation_holds_over_its_whole_range(errors, name):
    assert errors[name] <= TOLERANCES[name], f"{name}: worst error {errors[name]:.3g} > {TOLERANCES[name]}"


def test_committed_tables_are_the_fit_of_their_definitions():
    from smpc.protocols import fit, tables

    namespace: dict = {}
    exec(fit.render(), namespace)
    for name, table in tables.TABLES.items():
        fresh = namespace["TABLES"][name]
        assert table["points"] == fresh["points"]
        for mine, theirs in zip(table["coefficients"], fresh["coefficients"]):
            assert max(abs(a - b) for a, b in zip(mine, theirs)) < 1e-9, name
