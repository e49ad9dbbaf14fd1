"""The trusted dealer: correct tuples, the same answers as local randomness, any party layout."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import yaml

from harness import processes_mentioning, write_config
from launch import load_config, run
from smpc import artifacts
from smpc.dealer import material
from smpc.runfiles import output_path

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]


def _shares(kind, args, kwargs, parties):
    gens = [material.seeded(1000 + r) for r in range(parties)]
    correction = material.correction(kind, [material.seeded(1000 + r) for r in range(parties)], args, kwargs)
    shares = [material.draw(kind, g, r, args, kwargs) for r, g in enumerate(gens)]
    shares[0].append(correction)
    return [list(col) for col in zip(*shares)]  # per element of the tuple: every party's share


def _add(xs):
    return sum(xs[1:], xs[0].clone())


def _xor(xs):
    out = xs[0].clone()
    for x in xs[1:]:
        out ^= x
    return out


@pytest.mark.parametrize("parties", [2, 3, 4])
def test_additive_triples_multiply(parties):
    for op, s0, s1, kw in [
        ("mul", (3, 4), (3, 4), {}),
        ("matmul", (2, 3), (3, 5), {}),
        ("conv2d", (1, 2, 5, 5), (3, 2, 3, 3), {"stride": 2, "padding": 1}),
        ("conv1d", (2, 1, 7), (2, 1, 3), {"dilation": 2}),
    ]:
        a, b, c = _shares("additive", (torch.Size(s0), torch.Size(s1), op), kw, parties)
        assert torch.equal(_add(c), material.PRODUCTS[op](_add(a), _add(b), **kw)), op


@pytest.mark.parametrize("parties", [2, 3])
def test_square_binary_wraps_and_b2a_tuples(parties):
    size = torch.Size((4, 3))
    r, r2 = _shares("square", (size,), {}, parties)
    assert torch.equal(_add(r2), _add(r) * _add(r))
    a, b, c = _shares("binary", (size, size), {}, parties)
    assert torch.equal(_xor(c), _xor(a) & _xor(b))
    r, theta = _shares("wraps", (size,), {}, parties)
    from crypten.common.util import count_wraps

    assert torch.equal(_add(theta), count_wraps(r))
    bit_b, bit_a = _shares("B2A", (size,), {}, parties)
    assert torch.equal(_add(bit_a), _xor(bit_b)) and set(_xor(bit_b).unique().tolist()) <= {0, 1}


def test_each_party_draws_only_from_its_own_seed():
    args = (torch.Size((3,)), torch.Size((3,)), "mul")
    one = material.draw("additive", material.seeded(5), 1, args, {})
    again = material.draw("additive", material.seeded(5), 1, args, {})
    other = material.draw("additive", material.seeded(6), 1, args, {})
    assert all(torch.equal(x, y) for x, y in zip(one, again))
    assert not torch.equal(one[0], other[0])
    assert len(material.draw("additive", material.seeded(5), 0, args, {})) == 2  # party 0 waits for c


def _outputs(config_path, name):
    return artifacts.load_outputs(output_path(load_config(config_path), name))


def test_two_parties_dealer_matches_local_randomness(tmp_path):
    local_dir, dealer_dir = tmp_path / "local", tmp_path / "dealer"
    local_dir.mkdir(), dealer_dir.mkdir()
    local = run(load_config(write_config(local_dir, samples=64, batch_size=32)), echo=False)
    dealt = run(load_config(write_config(dealer_dir, samples=64, batch_size=32, dealer=True)), echo=False)
    assert dealt.randomness == "dealer" and local.randomness == "local"
    assert dealt.agreement >= 0.99 and dealt.max_abs_error < 0.05
    diff = (_outputs(local_dir / "config.yaml", "alice") - _outputs(dealer_dir / "config.yaml", "alice")).abs().max()
    assert diff < 0.05
    assert dealt.offline_s > 0


def test_three_parties_model_owner_data_owner_and_helper_with_dealer(tmp_path):
    config = write_config(tmp_path, samples=40, batch_size=16, helpers=1, dealer=True)
    report = run(load_config(config), echo=False)
    assert set(report.parties) == {"alice", "bob", "helper0"}
    assert report.agreement >= 0.99 and report.max_abs_error < 0.05
    assert (tmp_path / "run" / "dealer.log").read_text().count("connected from") == 3


def test_four_parties_two_data_owners_each_get_only_their_rows(tmp_path):
    config = write_config(tmp_path, samples=50, batch_size=16, helpers=1, dealer=True, data_owners=2)
    report = run(load_config(config), echo=False)
    assert report.samples == 50 and report.agreement >= 0.99
    # 25 rows each: batches mix both owners' rows, yet each receives exactly its own
    assert _outputs(config, "alice").shape == (25, 10)
    assert _outputs(config, "owner1").shape == (25, 10)
    for name in ("bob", "helper0"):
        assert not output_path(load_config(config), name).exists()


def _variant(tmp_path, name, **changes):
    doc = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        (doc[section] if section else doc)[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(*argv):
    return subprocess.Popen(SMPC + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: dict, timeout: float) -> dict:
    # each process's (stdout, stderr), waiting at most `timeout` for each; none is left running
    try:
        return {name: p.communicate(timeout=timeout) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()


def test_dealer_refuses_a_party_whose_settings_differ(tmp_path):
    write_config(tmp_path, samples=8, batch_size=8, dealer=True, timeouts={"connect_s": 20, "op_s": 10, "run_s": 60})
    base = tmp_path / "config.yaml"
    other = _variant(tmp_path, "other.yaml", **{"protocol": {"precision_bits": 20}})
    # the parties agree among themselves (both use `other`); the dealer does not
    procs = {
        "dealer": _start("dealer", str(base)),
        "alice": _start("party", str(other), "--name", "alice"),
        "bob": _start("party", str(other), "--name", "bob"),
    }
    results = _finish(procs, timeout=90)
    assert procs["dealer"].returncode == 2 and procs["alice"].returncode == 2, results
    assert "agreement check failed: protocol.precision_bits differs between the dealer and" in results["dealer"][1]
    refused = [
        n
        for n in ("alice", "bob")
        if "agreement check failed: protocol.precision_bits differs between the dealer" in results[n][1]
    ]
    assert refused, results


def test_parties_whose_settings_differ_stop_together(tmp_path):
    write_config(tmp_path, samples=8, batch_size=8, timeouts={"connect_s": 30, "op_s": 10, "run_s": 60})
    base = tmp_path / "config.yaml"
    other = _variant(tmp_path, "other.yaml", **{"protocol": {"precision_bits": 20}})
    procs = {
        "alice": _start("party", str(base), "--name", "alice"),
        "bob": _start("party", str(other), "--name", "bob"),
    }
    results = _finish(procs, timeout=90)
    for name, (_, err) in results.items():
        assert procs[name].returncode == 2, err
        assert "error: agreement check failed: protocol.precision_bits differs between alice and bob" in err
    assert processes_mentioning(str(base)) == [] and processes_mentioning(str(other)) == []


def test_the_dealer_hears_why_parties_whose_settings_differ_stop(tmp_path):
    # the dealer's full connect timeout is 60 s: it must not wait for it
    write_config(tmp_path, samples=8, batch_size=8, dealer=True, timeouts={"connect_s": 60, "op_s": 10, "run_s": 60})
    base = tmp_path / "config.yaml"
    other = _variant(tmp_path, "other.yaml", **{"protocol": {"precision_bits": 20}})
    started = time.monotonic()
    procs = {
        "dealer": _start("dealer", str(base)),
        "alice": _start("party", str(base), "--name", "alice"),
        "bob": _start("party", str(other), "--name", "bob"),
    }
    results = _finish(procs, timeout=60)
    assert time.monotonic() - started < 20, "all three must end within 20 s"
    assert all(p.returncode == 2 for p in procs.values()), results
    dealer_err = results["dealer"][1]
    assert "error: dealer: stopped before the run: " in dealer_err and "protocol.precision_bits differs" in dealer_err
    assert "did not connect" not in dealer_err


@pytest.mark.parametrize(
    "a, b",
    [
        ((3,), (3,)),
        ((2, 3), (3,)),
        ((3,), (3, 4)),
        ((5, 2, 3), (3, 4)),
        ((2, 3), (7, 3, 4)),
        ((1, 2, 3), (6, 3, 4)),
        ((6, 1, 2, 3), (5, 3, 4)),
        ((4, 1), (1, 5)),
        ((3,), (2, 3, 4)),
        ((2, 2, 3), (3,)),
    ],
)
def test_matmul_sizes_follow_torch_without_its_meta_kernels(a, b):
    assert (
        material.product_size("matmul", torch.Size(a), torch.Size(b), {})
        == torch.matmul(torch.zeros(a), torch.zeros(b)).shape
    )


@pytest.mark.parametrize("a, b", [((2, 1, 3), (4, 1)), ((3,), (2, 3)), ((1,), (5, 5)), ((), (2,)), ((4, 1), (1, 5))])
def test_elementwise_sizes_follow_torch(a, b):
    assert material.product_size("mul", torch.Size(a), torch.Size(b), {}) == (torch.zeros(a) * torch.zeros(b)).shape


@pytest.mark.parametrize(
    "op, x, w, kwargs",
    [
        ("conv2d", (60, 1, 8, 8), (16, 1, 3, 3), {"padding": 1}),
        ("conv2d", (2, 6, 28, 28), (16, 6, 5, 5), {}),
        ("conv2d", (3, 4, 9, 7), (8, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": 2, "groups": 2}),
        ("conv1d", (2, 3, 10), (5, 3, 4), {"stride": 3, "padding": 2}),
        ("conv1d", (1, 4, 7), (4, 1, 3), {"groups": 4, "dilation": 2}),
        ("conv_transpose2d", (2, 4, 5, 6), (4, 3, 3, 2), {"stride": 2, "padding": 1, "output_padding": 1}),
        ("conv_transpose1d", (2, 6, 5), (6, 2, 3), {"groups": 3, "stride": 2}),
        ("conv2d", (1, 2, 6, 6), (3, 2, 3, 3), {"padding": "same"}),  # by name: the meta kernel's
    ],
)
def test_convolution_sizes_follow_torch(op, x, w, kwargs):
    expected = getattr(torch, op)(torch.zeros(x), torch.zeros(w), **kwargs).shape
    assert material.product_size(op, torch.Size(x), torch.Size(w), kwargs) == expected


def test_product_sizes_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="matmul of shapes"):
        material.product_size("matmul", torch.Size((2, 3)), torch.Size((4, 5)), {})
    with pytest.raises(ValueError, match="do not broadcast"):
        material.product_size("mul", torch.Size((2, 3)), torch.Size((4, 3)), {})
