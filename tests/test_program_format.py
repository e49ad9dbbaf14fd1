"""Converted programs as files: a round trip gives the same computation, and a damaged
or hostile file is refused with one line naming the file and the problem."""

from __future__ import annotations

import json

import pytest
import torch

from hf_cases import build
from op_cases import make_case
from smpc.model.convert import convert
from smpc.errors import ArtifactError
from smpc.model.execute import run_program
from smpc.model import program_format


def _run(program, secret, feeds):
    with torch.no_grad():
        return run_program(program, secret, feeds)


@pytest.mark.parametrize("name", ["BertModel", "LlamaModel", "RobertaModel"])
def test_round_trip_computes_the_same(tmp_path, name):
    model, args, kwargs = build(name)
    program = convert(model, args, kwargs)
    program_format.save(program, tmp_path)
    loaded = program_format.load(tmp_path)
    values = list(args) + list(kwargs.values())
    feeds = {s.name: s.encode(v) for s, v in zip(program.inputs, values)}
    assert loaded.inputs == program.inputs and loaded.outputs == program.outputs
    assert {k: v.shape for k, v in loaded.secret.items()} == {k: v.shape for k, v in program.secret.items()}
    assert not any(v.abs().sum() for v in loaded.secret.values()), "no weight value travels with the program"
    for a, b in zip(_run(program, program.secret, feeds), _run(loaded, program.secret, feeds)):
        torch.testing.assert_close(a, b)
    assert loaded.architecture_fingerprint() == program_format.load(tmp_path).architecture_fingerprint()


def test_batchnorm_and_zoo_graphs_round_trip(tmp_path):
    model, x, _ = make_case("batchnorm2d_standalone")
    program = convert(model, x)
    program_format.save(program, tmp_path)
    torch.testing.assert_close(_run(program_format.load(tmp_path), program.secret, x)[0], model(x))


@pytest.fixture()
def saved(tmp_path):
    model, x, _ = make_case("linear")
    program_format.save(convert(model, x), tmp_path)
    return tmp_path


def _edit(directory, change):
    path = directory / program_format.GRAPH_FILE
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _call(document):
    return next(n for n in document["nodes"] if n["op"] == "call_function")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: _call(d).update(target="builtins.eval"), r"nodes\[\d+\]: unknown operation 'builtins.eval'"),
        (lambda d: _call(d).update(args=[{"node": "later"}]), r"refers to node 'later' before it is defined"),
        (lambda d: d.update(version=9), r"expected format smpc-program version 1"),
        (lambda d: d["inputs"][0].update(shape=[-1, 8]), r"inputs: expected a shape"),
        (lambda d: d["inputs"][0].update(kind="pickle"), r"inputs: kind must be float, ids or binary"),
        (lambda d: _call(d).update(args=[{"dtype": "object"}]), r"unknown dtype 'object'"),
        (lambda d: d["nodes"].append({"name": d["nodes"][0]["name"], "op": "placeholder"}), r"is used twice"),
    ],
)
def test_damaged_program_is_refused_in_one_line(saved, change, message):
    _edit(saved, change)
    with pytest.raises(ArtifactError, match=message) as err:
        program_format.load(saved)
    assert "\n" not in str(err.value) and str(saved) in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ArtifactError, match=r"program.json: program file not found"):
        program_format.load(tmp_path)


class _Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)

    def forward(self, ids, mask):
        return self.embed(ids) * mask.unsqueeze(-1)


@pytest.fixture()
def token_program(tmp_path):
    import smpc

    ids, mask = torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)
    return smpc.pack(_Tokens().eval(), (ids, mask), tmp_path / "tokens")


@pytest.mark.parametrize(
    "ids, mask, message",
    [
        (torch.full((3, 5), 10), torch.ones(3, 5), r"data.safetensors: ids: id 10 is outside the vocabulary 0..9$"),
        (torch.zeros(3, 5), torch.full((3, 5), 2), r"data.safetensors: mask: expected 0/1 values \(a mask\), got 2$"),
        (torch.zeros(3, 5), torch.ones(3, 4), r"data.safetensors: mask has shape \[3, 4\], expected \[N, 5\]$"),
        (torch.zeros(3, 5), torch.ones(2, 5), r"data.safetensors: mask has 2 rows, the other inputs 3$"),
    ],
)
def test_bad_rows_are_refused_naming_the_input(tmp_path, token_program, ids, mask, message):
    from types import SimpleNamespace

    from smpc import artifacts
    from smpc.errors import SmpcError
    from smpc.model import pack

    assert [(s.name, s.kind, s.depth) for s in token_program.inputs] == [("ids", "ids", 10), ("mask", "binary", 0)]
    path = tmp_path / "data.safetensors"
    artifacts.save_inputs(path, {"ids": ids.long(), "mask": mask.long()})
    config = SimpleNamespace(model=SimpleNamespace(program=tmp_path / "tokens"))
    with pytest.raises(SmpcError, match=message):
        pack.load_rows(config, token_program, path)


def test_signed_packed_program_is_verified_before_the_owner_loads_it(tmp_path, token_program):
    from types import SimpleNamespace

    from smpc import keys
    from smpc.model import model_dir
    from smpc.model import pack

    keys.create_ca(tmp_path / "keys")
    keys.issue(tmp_path / "keys", "bob")
    directory = tmp_path / "tokens"
    model_dir.sign(directory, tmp_path / "keys" / "bob.key")
    config = SimpleNamespace(
        source="x.yaml",
        batch_size=2,
        serving=None,
        model=SimpleNamespace(program=directory, public_key=tmp_path / "keys" / "bob.pub", architecture=None),
    )
    program = pack.build_program(config, directory)
    torch.testing.assert_close(program.secret, token_program.secret)
    weights = directory / model_dir.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"signature verification failed"):
        pack.build_program(config, directory)
    config.batch_size = 4
    with pytest.raises(
        Exception, match=r"x.yaml: batch_size: the program in .* was packed for batches of 1, 2 rows, got 4"
    ):
        pack.build_program(config, None)
