"""What each party actually holds: shares that reveal nothing alone, and outputs only where allowed."""

from __future__ import annotations

import torch

from harness import run_parties


def _views(rank: int, world_size: int) -> dict:
    from smpc import session, zoo
    from smpc.convert import convert

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
    import smpc  # noqa: F401
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
