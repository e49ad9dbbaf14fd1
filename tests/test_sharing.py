"""What each party actually holds: shares that reveal nothing alone, and outputs only where allowed."""

from __future__ import annotations

import torch

from harness import run_parties


def _views(rank: int, world_size: int) -> dict:
    from smpc import session
    from smpc.model import zoo
    from smpc.model.convert import convert

    torch.manual_seed(7)  # the same weights in every process, so the test can compare
    model = zoo.build("digits_cnn")
    program = convert(model, torch.zeros(2, 1, 8, 8))
    owner = world_size - 1
    params = session.share_parameters(program, owner)
    return {
        "shares": {k: v._tensor.share.clone() for k, v in params.items()},
        "weights": {k: v.clone() for k, v in program.secret.items()},
    }


def _encode(weight: torch.Tensor) -> torch.Tensor:
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
    from crypten.encoder import FixedPointEncoder

    return FixedPointEncoder(precision_bits=16).encode(weight)


def test_non_owner_holds_only_shares_of_the_weights():
    views = run_parties(_views, 2, timeout=120)
    for name, weight in views[1]["weights"].items():
        encoded = _encode(weight)
        mine, theirs = views[0]["shares"][name], views[1]["shares"][name]
        # the non-owner's share is not the weight, nor close to it ...
        assert not torch.equal(mine, encoded)
        assert (mine - encoded).abs().float().median() > 2**40
        # ... and the owner's alone is not either; only the two together are
        assert not torch.equal(theirs, encoded)
        assert torch.equal(mine + theirs, encoded), name


def test_three_parties_shares_sum_to_the_weights():
    views = run_parties(_views, 3, timeout=120)
    for name, weight in views[2]["weights"].items():
        encoded = _encode(weight)
        total = sum(v["shares"][name] for v in views)
        assert torch.equal(total, encoded)
        for helper in views[:2]:
            assert not torch.equal(helper["shares"][name], encoded)


def _reveal_to_self(rank: int, world_size: int) -> str:
    """Party 1 deviates: it asks for the output itself. Party 0 follows the config
    (only rank 0 is entitled). Both must refuse before anything is opened."""
    from smpc import session
    from smpc.errors import PartyError

    x = session.share_input(torch.ones(3) if rank == 0 else None, torch.Size((3,)), 0)
    wanted = [0] if rank == 0 else [1]
    try:
        session.reveal(x, wanted, entitled=[0])
    except PartyError as exc:
        return str(exc)
    return "revealed"


def test_a_reveal_to_a_party_that_is_not_entitled_is_refused_by_the_others():
    honest, deviant = run_parties(_reveal_to_self, 2, timeout=120)
    assert honest == "refused to reveal: party at rank 1 asked to reveal to rank(s) [1]; entitled here: [0]"
    assert deviant.startswith("refused to reveal: ")  # and it got nothing either
