"""CrypTen computing on the two-party source: two real party processes, no dealer, every
triple, square, AND triple and B2A bit made between them (smpc.twoparty.provider)."""

from __future__ import annotations

import pytest
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


def _compute(rank: int, world_size: int, comparisons: str) -> dict:
    import crypten

    from smpc.protocols import switches
    from smpc.twoparty.link import Link
    from smpc.twoparty.provider import TwoPartyProvider

    provider = TwoPartyProvider()
    provider.connect(Link())
    switches.register_provider("TWO_PARTY_TEST", provider)
    crypten.cfg.mpc.provider = "TWO_PARTY_TEST"
    switches.use_comparisons(comparisons, "local")
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
        "argmax": x.argmax(dim=1),
        "max_pool2d": image.max_pool2d(2),
        "eq": x == x,
    }
    return {name: value.get_plain_text() for name, value in out.items()}


@pytest.mark.parametrize("comparisons", ["ot", "circuits"])
def test_crypten_computes_on_triples_the_two_parties_made_alone(comparisons):
    p0, p1 = run_parties(_compute, 2, comparisons, timeout=600)
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
        "argmax": torch.nn.functional.one_hot(t["x"].argmax(dim=1), 6).float(),
        "max_pool2d": torch.nn.functional.max_pool2d(t["image"], 2),
        "eq": torch.ones(4, 6),
    }
    for name, value in want.items():
        assert torch.allclose(p0[name].float(), value, atol=TOLERANCE), name
        assert torch.equal(p0[name], p1[name]), name


# -- a whole run: smpc.simulate with randomness: two-party ----------------------------


def test_a_model_runs_on_two_parties_alone_with_its_offline_phase_apart():
    import smpc

    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(5, 4, generator=g)
    sim = smpc.simulate(model, x, randomness="two-party", quiet=True)
    assert torch.allclose(sim.outputs, sim.plain, atol=TOLERANCE)
    assert sim.report.randomness == "two-party" and sim.report.dealer is None
    for name, party in sim.report.parties.items():
        # the offline phase (base OTs, keys, every item) is reported apart from the online traffic
        assert party["offline_bytes"] > 10 * party["bytes_sent"] > 0, name
        assert party["offline_rounds"] > 0
        assert sum(row["bytes_sent"] for row in party["layers"]) == party["bytes_sent"]
        assert sum(row["rounds"] for row in party["layers"]) == party["rounds"]
    assert sim.report.offline_s > 0


def test_a_model_too_large_for_the_two_party_source_is_refused_in_one_line():
    import smpc
    from smpc.errors import SmpcError

    model = torch.nn.Linear(1024, 1024)  # 1,024 rows: one product of about 1.3 GiB a party
    with pytest.raises(
        SmpcError, match=r"randomness: two-party: this run's offline phase would send [\d.]+ GiB"
    ) as caught:
        smpc.simulate(model, torch.zeros(1024, 1024), randomness="two-party", quiet=True)
    message = str(caught.value)
    assert "its largest request, matmul of [1024, 1024] with weight" in message
    assert "use randomness: dealer for this model" in message
    assert "\n" not in message.strip().splitlines()[0]


def test_the_volume_limit_names_the_largest_request_of_any_kind():
    from smpc.errors import PartyError
    from smpc.twoparty import provider

    small = ("square", (torch.Size([4]),), {})
    provider.check_volume([small], 3)  # well within: nothing raised
    words = ("binary", (torch.Size([10_000_000]), torch.Size([10_000_000])), {})
    with pytest.raises(PartyError, match=r"its largest request, binary of \[10000000\], 10\.13 GiB a batch"):
        provider.check_volume([small, words], 1)
    linear = ("fixed", ("matmul", torch.Size([60, 512]), "fc.weight", torch.Size([64, 512]), True), {})
    assert provider.request_bytes(*linear) == provider.packed_bytes(60, 512, 64)
    # over 6 batches, a weight mask's ciphertexts cross in the first: the later ones send results alone
    first, later = (provider.request_bytes(*linear, crossed=c, batches=6) for c in (False, True))
    assert later == provider.packed_bytes(60, 512, 64, False, kept_for=6) < first / 2
    elementwise = ("additive", (torch.Size([60, 512]), torch.Size([60, 512]), "mul"), {})
    assert provider.request_bytes(*elementwise) == provider.he_bytes(1, 60 * 512)
    wide = ("fixed", ("matmul", torch.Size([60_000, 512]), "fc.weight", torch.Size([4096, 512]), True), {})
    with pytest.raises(PartyError, match=r"matmul of \[60000, 512\] with weight fc.weight"):
        provider.check_volume([wide], 1)


def test_a_launched_two_party_run_over_tls_has_no_dealer_and_every_answer_right(tmp_path):
    # smpc party per organization, over mutually authenticated TLS, as on two hosts
    from harness import write_tls_config
    from launch import run
    from smpc.config import load_config

    path = write_tls_config(tmp_path, samples=12, batch_size=6, randomness="two-party")
    report = run(load_config(path), echo=False)
    assert report.randomness == "two-party" and report.dealer is None and report.agreement == 1.0
    assert report.comparisons == "ot"  # the default without a dealer
    for name, party in report.parties.items():
        assert party["offline_bytes"] > party["bytes_sent"] > 0 and party["offline_rounds"] > 0, name
