"""Converter: graph capture, BatchNorm folding, and errors before any party computes.

Graphs are executed here on plain tensors (the ops accept both), which checks the
graph rewriting exactly; the secret-shared execution is in test_ops_mpc.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from op_cases import CASES, make_case
from smpc.model import ops, zoo
from smpc.model.convert import convert
from smpc.errors import ConversionError, UnsupportedOpError
from smpc.model.execute import run_program


@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_on_plain_tensors_matches_pytorch(name):
    model, x, _ = make_case(name)
    program = convert(model, x)
    with torch.no_grad():
        expected = model(x)
        got = run_program(program, dict(program.secret), x)[0]
    assert got.shape == expected.shape == program.output_shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_batchnorm_after_conv_is_folded_away():
    model, x, _ = make_case("batchnorm2d_folded")
    program = convert(model, x)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets == ["aten.conv2d.default"]
    # the BN's weight, bias and statistics are no longer parameters: one kernel, one bias
    assert sorted(v.shape for v in program.secret.values()) == [torch.Size([4]), torch.Size([4, 3, 3, 3])]


def test_standalone_batchnorm_becomes_channel_affine():
    model, x, _ = make_case("batchnorm2d_standalone")
    program = convert(model, x)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.aten.relu.default, ops.channel_affine]


class Inner(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1)[0] + torch.fft.fft(x).real


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), Inner())])

    def forward(self, x):
        return self.encoder.layers[0](x)


def test_unsupported_op_names_module_path_and_op():
    with pytest.raises(UnsupportedOpError) as err:
        convert(Nested(), torch.zeros(2, 4))
    # every refused op at once, each with the module it came from
    assert str(err.value).splitlines() == [
        "encoder.layers.0.1: aten.sort is not supported",
        "encoder.layers.0.1: aten.fft_fft is not supported",
        "encoder.layers.0.1: aten.view_as_real is not supported",
    ]


def test_wrong_input_shape_is_a_conversion_error():
    with pytest.raises(ConversionError, match=r"^the model cannot take an input of shape \[2, 1, 12, 12\]: "):
        convert(zoo.build("digits_cnn"), torch.zeros(2, 1, 12, 12))


def test_public_constants_are_computed_in_plain_torch():
    class Shift(nn.Module):
        def forward(self, x):
            return x + torch.arange(4.0).cumsum(0)  # cumsum on public values only

    model, x = Shift(), torch.randn(3, 4)
    program = convert(model, x)
    # computed once at conversion: the graph holds the constant, not the cumsum
    assert [str(n.target) for n in program.graph.nodes if n.op == "call_function"] == ["aten.add.Tensor"]
    assert any(torch.equal(v, torch.arange(4.0).cumsum(0)) for v in program.public.values())
    torch.testing.assert_close(run_program(program, {}, x)[0], model(x))


def test_several_outputs_keep_their_names():
    class Two(nn.Module):
        def forward(self, x):
            return {"plus": x + 1, "times": x * 2}

    program = convert(Two(), torch.zeros(2))
    assert program.outputs == (("plus", (2,)), ("times", (2,)))


def test_huge_mask_constants_become_a_value_the_ring_holds():
    class Masked(nn.Module):
        def forward(self, x):
            mask = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
            return torch.softmax(x.masked_fill(mask, torch.finfo(torch.float32).min), -1)

    program = convert(Masked(), torch.zeros(3, 3))
    assert all(v.abs().max() < 1e9 for v in program.public.values() if v.is_floating_point())
    x = torch.randn(3, 3)
    torch.testing.assert_close(run_program(program, {}, x)[0], Masked()(x))


def test_fingerprint_depends_on_architecture_not_weights():
    a, b = zoo.build("digits_cnn"), zoo.build("digits_cnn")
    torch.nn.init.constant_(b.classifier[1].weight, 0.5)
    x = torch.zeros(4, 1, 8, 8)
    assert convert(a, x).architecture_fingerprint() == convert(b, x).architecture_fingerprint()
    assert (
        convert(a, x).architecture_fingerprint()
        != convert(zoo.build("lenet5"), torch.zeros(4, 1, 28, 28)).architecture_fingerprint()
    )


def test_unknown_architecture_lists_the_zoo():
    from smpc.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"^model\.architecture: unknown architecture 'resnet' \(known: digits_cnn, lenet5, mlp"
    ):
        zoo.build("resnet")


@pytest.mark.parametrize("name", sorted(zoo.ARCHITECTURES))
def test_every_zoo_model_converts_at_its_input_shape(name):
    model = zoo.build(name)
    shape = zoo.INPUT_SHAPES[name]
    program = convert(model, torch.zeros(2, *shape))
    assert program.output_shape == torch.Size((2, 10))
    # batch norms are folded away; what is left runs on shares
    assert not any("batch_norm" in str(n.target) for n in program.graph.nodes if n.op == "call_function")


def test_layer_labels_name_module_and_class():
    from smpc.model.program import layer_label

    program = convert(zoo.build("lenet5"), torch.zeros(1, 1, 28, 28))
    labels = {layer_label(n) for n in program.graph.nodes if n.op == "call_function"}
    assert {"features.0 Conv2d", "features.1 ReLU", "features.2 MaxPool2d", "classifier.5 Linear"} <= labels


class PaddingPositions(nn.Module):
    """RoBERTa's position ids: counted from the secret ids' non-padding tokens, looked up
    at that secret index; a buffer constant along its axis gathered at it."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(20, 4), nn.Embedding(10, 4)
        self.register_buffer("types", torch.zeros(1, 6, dtype=torch.long), persistent=False)

    def forward(self, ids):
        keep = ids.ne(1).int()
        positions = (torch.cumsum(keep, dim=1).type_as(keep) * keep).long() + 1
        types = self.types.expand(ids.shape[0], -1).gather(1, positions)
        return self.words(ids) + self.positions(positions) + types.unsqueeze(-1)


def test_positions_computed_from_secret_ids_are_looked_up_at_a_secret_index():
    torch.manual_seed(0)
    model, ids = PaddingPositions(), torch.tensor([[5, 7, 1, 1, 1], [3, 4, 6, 8, 1]])
    program = convert(model, ids)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert ops.ids_differ in targets and ops.lookup_secret_index in targets
    # the gather from the all-zero buffer does not depend on the index: folded away
    assert torch.ops.aten.gather.default not in targets and ops.gather_secret_index not in targets
    (spec,) = program.inputs
    assert (spec.kind, spec.depth) == ("ids", 20)
    with torch.no_grad():
        torch.testing.assert_close(run_program(program, dict(program.secret), spec.encode(ids))[0], model(ids))


def test_indexing_at_a_secret_index_other_than_lookups_is_refused_by_module():
    class Select(nn.Module):
        def forward(self, x):
            return torch.index_select(x, 1, (x[0] > 0).long())

    with pytest.raises(UnsupportedOpError, match=r"^<model>: aten.index_select at a secret index is not supported$"):
        convert(Select(), torch.randn(3, 4))
