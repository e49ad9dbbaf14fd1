"""Hugging Face models converted as they are, executed exactly on plain tensors, and on
shares by two real party processes with the fidelity docs/explanation/models.md lists."""

from __future__ import annotations

import pytest
import torch

from harness import run_parties
from hf_cases import ARCHITECTURES, build, worst_cosine

pytest.importorskip("transformers")


def _reference(model, args, kwargs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*args, **kwargs)
    return [out] if isinstance(out, torch.Tensor) else list(out.values())


def _feeds(program, args, kwargs) -> dict[str, torch.Tensor]:
    values = list(args) + list(kwargs.values())
    return {spec.name: spec.encode(v) for spec, v in zip(program.inputs, values)}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_converts_unedited_and_runs_exactly_on_plain_tensors(name):
    from smpc.model.convert import convert
    from smpc.model.execute import run_program

    model, args, kwargs = build(name)
    program = convert(model, args, kwargs)
    with torch.no_grad():
        got = run_program(program, dict(program.secret), _feeds(program, args, kwargs))
    want = _reference(model, args, kwargs)
    assert [n for n, _ in program.outputs] == list(model(*args, **kwargs).keys())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def _on_shares(rank: int, world_size: int, names: list[str]) -> dict[str, list[float]]:
    from smpc import session
    from smpc.model.convert import convert
    from smpc.model.execute import run_program

    owner, data_owner = 1, 0
    result = {}
    for name in names:
        model, args, kwargs = build(name)
        program = convert(model, args, kwargs)
        params = session.share_parameters(program, owner)
        feeds = _feeds(program, args, kwargs)
        shared = {
            k: session.share_input(v if rank == data_owner else None, v.shape, data_owner) for k, v in feeds.items()
        }
        outputs = run_program(program, params, shared)
        revealed = [session.reveal(o, [data_owner]) for o in outputs]
        if rank == data_owner:
            want = _reference(model, args, kwargs)
            result[name] = [worst_cosine(name, kwargs, g, w) for g, w in zip(revealed, want)]
    return result


@pytest.fixture(scope="module")
def cosines() -> dict[str, list[float]]:
    return run_parties(_on_shares, 2, sorted(ARCHITECTURES), timeout=900)[0]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_reaches_its_fidelity_on_shares(cosines, name):
    least = ARCHITECTURES[name][2]
    assert min(cosines[name]) >= least, f"{name}: worst cosine per output {cosines[name]} < {least}"
