"""Converted programs as files: a round trip gives the same computation, and a damaged
or hostile file is refused with one line naming the file and the problem."""

from __future__ import annotations

import json

import pytest
import torch

from hf_cases import build
from op_cases import make_case
from smpc.convert import convert
from smpc.errors import ArtifactError
from smpc.execute import run_program
from smpc.model import program_format


def _run(program, secret, feeds):
    with torch.no_grad():
        return run_program(program, secret, feeds)


@pytest.mark.parametrize("name", ["BertModel", "GPT2Model", "LlamaModel", "ViTModel"])
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


@pytest.mark.parametrize("change, message", [
    (lambda d: _call(d).update(target="builtins.eval"), r"nodes\[\d+\]: unknown operation 'builtins.eval'"),
    (lambda d: _call(d).update(args=[{"node": "later"}]), r"refers to node 'later' before it is defined"),
    (lambda d: d.update(version=9), r"expected format smpc-program version 1"),
    (lambda d: d["inputs"][0].update(shape=[-1, 8]), r"inputs: expected a shape"),
    (lambda d: d["inputs"][0].update(kind="pickle"), r"inputs: kind must be float, ids or binary"),
    (lambda d: _call(d).update(args=[{"dtype": "object"}]), r"unknown dtype 'object'"),
    (lambda d: d["nodes"].append({"name": d["nodes"][0]["name"], "op": "placeholder"}), r"is used twice"),
])
def test_damaged_program_is_refused_in_one_line(saved, change, message):
    _edit(saved, change)
    with pytest.raises(ArtifactError, match=message) as err:
        program_format.load(saved)
    assert "\n" not in str(err.value) and str(saved) in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ArtifactError, match=r"program.json: program file not found"):
        program_format.load(tmp_path)
