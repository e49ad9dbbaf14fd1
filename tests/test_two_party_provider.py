"""CrypTen computing on the two-party source: two real party processes, no dealer, every
triple, square, AND triple and B2A bit made between them (smpc.twoparty.provider)."""

from __future__ import annotations

import torch

from harness import run_parties

TOLERANCE = 2e-3  # 16 fractional bits, a few truncations


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "x": torch.randn(4, 6, generator=g),
        "y": torch.randn(4, 6, generator=g),
        "row": torch.randn(6, generator=g),
        "w": torch.randn(6, 3, generator=g),
        "image": torch.randn(2, 3, 6, 6, generator=g),
        "kernel": torch.randn(4, 3, 3, 3, generator=g) / 3,
    }


def _compute(rank: int, world_size: int) -> dict:
    import crypten

    from smpc.protocols import switches
    from smpc.twoparty.link import Link
    from smpc.twoparty.provider import TwoPartyProvider

    provider = TwoPartyProvider()
    provider.connect(Link())
    switches.register_provider("TWO_PARTY_TEST", provider)
    crypten.cfg.mpc.provider = "TWO_PARTY_TEST"
    switches.use_comparisons("circuits", "local")
    t = _inputs()
    x, y = crypten.cryptensor(t["x"], src=0), crypten.cryptensor(t["y"], src=0)
    row = crypten.cryptensor(t["row"], src=0)
    w, kernel = crypten.cryptensor(t["w"], src=1), crypten.cryptensor(t["kernel"], src=1)
    image = crypten.cryptensor(t["image"], src=0)
    out = {
        "mul": x * y,
        "broadcast": x * row,
        "matmul": x @ w,
        "conv2d": image.conv2d(kernel, padding=1, stride=2),
        "square": x.square(),
        "relu": x.relu(),
        "lt": (x < y),
        "max": x.max(dim=1)[0],
    }
    return {name: value.get_plain_text() for name, value in out.items()}


def test_crypten_computes_on_triples_the_two_parties_made_alone():
    p0, p1 = run_parties(_compute, 2, timeout=600)
    t = _inputs()
    want = {
        "mul": t["x"] * t["y"],
        "broadcast": t["x"] * t["row"],
        "matmul": t["x"] @ t["w"],
        "conv2d": torch.conv2d(t["image"], t["kernel"], padding=1, stride=2),
        "square": t["x"].square(),
        "relu": t["x"].relu(),
        "lt": (t["x"] < t["y"]).float(),
        "max": t["x"].max(dim=1)[0],
    }
    for name, value in want.items():
        assert torch.allclose(p0[name].float(), value, atol=TOLERANCE), name
        assert torch.equal(p0[name], p1[name]), name
