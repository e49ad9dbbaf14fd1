"""Weights paid for once (smpc.protocols.fixed): products with a weight as the fixed
operand open W - B once per session and only x - A per batch.

In one process, the parties' local halves on material made exactly as the dealer makes
it (exact in the ring, on edge values; and what the parties see does not depend on the
weights); then real runs (party processes, the dealer): the answers are right and a
second batch costs the bytes of the inputs' masks, not of the weights."""

from __future__ import annotations

import secrets

import pytest
import torch
from torch import nn

import smpc
from harness import write_program_config
from smpc.runs.profile import by_layer
from smpc.runs.runner import run
from smpc import artifacts
from smpc.config import load_config
from smpc.dealer import material
from smpc.protocols import fixed
from smpc.protocols.csprng import AesCtrGenerator

TOP, BOTTOM = 2**63 - 1, -(2**63)


def _ring(*shape: int) -> torch.Tensor:
    return AesCtrGenerator().ring(shape)


def _product(op: str, x: torch.Tensor, w: torch.Tensor, transposed: bool, kwargs: dict, seeds=None, batch_seeds=None):
    """Two parties' local halves of x op W against the session masks: (sum of the shares,
    D opened, E opened)."""
    seeds = seeds or [secrets.token_bytes(32) for _ in range(2)]
    batch_seeds = batch_seeds or [secrets.token_bytes(32) for _ in range(2)]
    w_shares = [_ring(*w.shape)]
    w_shares.append(w - w_shares[0])
    x_shares = [_ring(*x.shape)]
    x_shares.append(x - x_shares[0])
    masks = [fixed.mask_share(s, "w", w.shape) for s in seeds]
    opened = sum(ws - m for ws, m in zip(w_shares, masks))  # D = W - B, opened once
    weights = [fixed.FixedWeight("w", None, m, opened) for m in masks]
    args = (op, x.shape, "w", w.shape, transposed)
    generators = [AesCtrGenerator(s) for s in batch_seeds]
    correction = material.correction("fixed", generators, args, kwargs, material.FixedMasks(seeds))
    pairs = [material.draw("fixed", AesCtrGenerator(s), rank, args, kwargs) for rank, s in enumerate(batch_seeds)]
    pairs[0].append(correction)
    e = sum(xs - a for xs, (a, _) in zip(x_shares, pairs))  # E = x - A, the batch's one opening
    z = sum(
        fixed.local_product(rank, op, e, a, c, weights[rank], transposed, kwargs) for rank, (a, c) in enumerate(pairs)
    )
    return z, opened, e


@pytest.mark.parametrize(
    "op, x_shape, w_shape, transposed, kwargs",
    [
        ("matmul", (3, 5, 8), (6, 8), True, {}),  # a linear layer: x @ W^T
        ("matmul", (2, 4, 10), (10, 6), False, {}),  # a lookup: one-hot ids @ T
        (
            "conv2d",
            (2, 3, 7, 7),
            (4, 3, 3, 3),
            False,
            {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1},
        ),
        ("conv1d", (2, 4, 9), (6, 2, 3), False, {"stride": (1,), "padding": (0,), "dilation": (1,), "groups": 2}),
    ],
)
def test_the_local_halves_add_up_to_the_product_exactly_in_the_ring(op, x_shape, w_shape, transposed, kwargs):
    x, w = _ring(*x_shape), _ring(*w_shape)
    flat_w = w.view(-1)
    flat_w[: min(6, flat_w.numel())] = torch.tensor([0, 1, -1, TOP, BOTTOM, TOP - 1])[: min(6, flat_w.numel())]
    x.view(-1)[:4] = torch.tensor([BOTTOM, TOP, 0, -1])
    z, _, _ = _product(op, x, w, transposed, kwargs)
    want = fixed.PRODUCTS[op](x, w.t() if transposed else w, **kwargs)
    assert torch.equal(z, want)


def test_what_the_parties_open_does_not_depend_on_the_weights():
    # the same parties' keys and batch streams, two very different weights: every batch's
    # opening E is the same bit for bit, and D is uniform whatever W (its top byte spreads
    # over all 256 values evenly, for W = 0 as for a constant)
    seeds, batches = [secrets.token_bytes(32) for _ in range(2)], [secrets.token_bytes(32) for _ in range(2)]
    x = _ring(64, 32)
    zero, constant = torch.zeros(48, 32, dtype=torch.long), torch.full((48, 32), 12345 << 16, dtype=torch.long)
    _, d0, e0 = _product("matmul", x, zero, True, {}, seeds, batches)
    _, d1, e1 = _product("matmul", x, constant, True, {}, seeds, batches)
    assert torch.equal(e0, e1)
    for d in (d0, d1):
        counts = torch.bincount(((d >> 56) & 0xFF).view(-1), minlength=256).double()
        expected = d.numel() / 256
        assert float(((counts - expected) ** 2 / expected).sum()) < 400  # chi-square, 255 dof: p ~ 1e-8 above
    # a second batch with the same inputs opens a fresh E (A is fresh): nothing links them
    _, _, e2 = _product("matmul", x, constant, True, {}, seeds, [secrets.token_bytes(32) for _ in range(2)])
    assert not torch.equal(e1, e2) and float((e1 == e2).double().mean()) < 1e-3


def test_a_fixed_request_without_the_session_masks_is_refused():
    args = ("matmul", torch.Size((2, 3)), "w", torch.Size((4, 3)), True)
    with pytest.raises(ValueError, match="needs the session's masks"):
        material.correction("fixed", [AesCtrGenerator(), AesCtrGenerator()], args, {})


class Lookup(nn.Module):
    """An embedding read by secret ids, then a linear layer: both weights are fixed operands."""

    def __init__(self, vocabulary: int = 300, width: int = 64) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.table = nn.Embedding(vocabulary, width)
        self.fc = nn.Linear(width, 4)

    def forward(self, ids):
        return self.fc(self.table(ids)).sum(1)


def test_a_second_batch_costs_the_inputs_masks_not_the_weights(tmp_path):
    ids = torch.randint(0, 300, (8, 5))
    model = Lookup().eval()
    smpc.pack(model, (ids[:4],), tmp_path / "model", buckets=False)
    parties = {}
    for rows in (4, 8):  # one batch of 4, then two
        data = tmp_path / f"ids{rows}.safetensors"
        artifacts.save_inputs(data, {"ids": ids[:rows]})
        report = run(
            load_config(write_program_config(tmp_path, tmp_path / "model", data, batch_size=4, dealer=True)), echo=False
        )
        assert min(o["min_cosine"] for o in report.outputs.values()) > 0.9999
        parties[rows] = report.parties["alice"]
    # a party's bytes_sent counts an opening of n ring elements as 8 n: it sends its share
    table, one_hot = 300 * 64 * 8, 4 * 5 * 300 * 8
    layers = {
        rows: {layer["layer"]: layer["bytes_sent"] for layer in by_layer(p["layers"])} for rows, p in parties.items()
    }
    assert layers[4]["<setup>"] == layers[8]["<setup>"] >= table  # W - B opened once, when the model is shared
    second = parties[8]["bytes_sent"] - parties[4]["bytes_sent"]
    lookup = layers[8]["table Embedding"] - layers[4]["table Embedding"]
    assert one_hot <= lookup < one_hot + table // 8  # x - A of the one-hot ids, and the truncation: not the table
    assert second < one_hot + table // 4


class ThreeReaders(nn.Module):
    """Three linear layers that read the same input (as a transformer's queries, keys and
    values do; one without a bias), and one that reads another."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.q, self.k, self.v = nn.Linear(16, 8), nn.Linear(16, 8, bias=False), nn.Linear(16, 4)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.q(x) * self.k(x)) + self.v(x).sum(-1, keepdim=True)


def test_linear_layers_that_read_one_input_are_one_product():
    from smpc.model.convert import convert

    x = torch.randn(3, 5, 16)
    program = convert(ThreeReaders().eval(), x)
    (group,) = fixed.fused_linears(program)
    assert group.members == ("p_q_weight", "p_k_weight", "p_v_weight") and group.sizes == (8, 8, 4)
    assert fixed.fixed_names(program) == ["p_out_weight", "p_q_weight+p_k_weight+p_v_weight"]

    result = smpc.simulate(ThreeReaders().eval(), x, parties=2, randomness="dealer", quiet=True)
    assert result.cosine > 0.9999
    rows = [r for r in result.report.parties["alice"]["layers"] if r["layer"] in ("q Linear", "k Linear", "v Linear")]
    cost = {
        layer: sum(r["rounds"] for r in rows if r["layer"] == layer) for layer in ("q Linear", "k Linear", "v Linear")
    }
    # one opening of x - A and one truncation for the three, charged to the first; the
    # others only add their biases
    assert cost == {"q Linear": 2, "k Linear": 0, "v Linear": 0}
    sent = sum(r["bytes_sent"] for r in rows)
    assert sent == 8 * x.numel() + 8 * 3 * 5 * (8 + 8 + 4)


class Scores(nn.Module):
    """Attention's scores: a product of two secrets that only a public scaling reads."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.q, self.k, self.factor = nn.Linear(16, 8), nn.Linear(16, 8), factor

    def forward(self, x):
        return torch.matmul(self.q(x), self.k(x).transpose(-1, -2)) * self.factor


@pytest.mark.parametrize("factor", [32**-0.5, 0.25])
def test_a_product_that_only_a_public_scaling_reads_is_truncated_once(factor):
    x = torch.randn(2, 6, 16) * 2
    result = smpc.simulate(Scores(factor).eval(), x, parties=2, randomness="dealer", quiet=True)
    assert result.cosine > 0.9999
    assert result.max_abs_error < 1e-3
    rows = [r for r in result.report.parties["alice"]["layers"] if r["layer"] == "<model> Scores"]
    rounds = {op: sum(r["rounds"] for r in rows if r["op"] == op) for op in {r["op"] for r in rows}}
    # the product's one opening and its one truncation (by round(2^16 / factor)); the
    # scaling itself costs nothing
    assert rounds == {"transpose": 0, "matmul": 0, "matmul: products": 1, "matmul: truncations": 1, "mul": 0}


def test_a_scaling_is_folded_only_where_its_divisor_is_exact_and_allowed():
    from smpc import fixed_point

    assert fixed_point.scaled_divisor(0.25) == 2**18
    assert fixed_point.scaled_divisor(32**-0.5) == 370728  # 2^16 sqrt(32) = 370727.6
    assert fixed_point.scaled_divisor(1.0) == 2**16
    # no sign change, nothing to divide by, a divisor past 2^31, one below 1
    for factor in (0.0, -0.5, float("nan"), float("inf"), 2.0**-16, 1e5):
        assert fixed_point.scaled_divisor(factor) is None
