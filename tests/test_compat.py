"""The compat layer: CrypTen imports and computes on torch 2.13, in fresh processes too."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from harness import free_port, run_parties


def test_plain_crypten_import_fails_without_smpc():
    # documents why the stand-in exists: if this starts passing, the patch can go.
    # CrypTen's ONNX converter needs the onnx package (not installed: smpc does not
    # need it) and torch.onnx internals that torch 2.13 no longer has
    result = subprocess.run([sys.executable, "-c", "import crypten"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "crypten/nn/onnx_converter.py" in result.stderr
    assert "No module named 'onnx'" in result.stderr or "torch.onnx._internal.registration" in result.stderr


def test_importing_smpc_compat_makes_crypten_importable_in_a_fresh_interpreter():
    # without CrypTen's ONNX converter: onnx is not imported (0.8 s of every process's
    # start), and the converter's entry points refuse by name
    code = (
        "import sys, smpc.compat, crypten, crypten.nn; print(crypten.nn.Linear.__name__, 'onnx' in sys.modules)\n"
        "try:\n    crypten.nn.from_pytorch(None, None)\nexcept RuntimeError as exc:\n    print(exc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Linear False",
        "crypten.nn.from_pytorch is not available with smpc: convert models with smpc.model.convert",
    ]


def _inspect_child(rank: int, world_size: int) -> dict:
    from smpc import compat  # first: it is what makes crypten importable

    import crypten
    import crypten.communicator.distributed_communicator as dc
    from crypten.encoder import FixedPointEncoder

    x = crypten.cryptensor(torch.tensor([-24.99969, 3.5, -1.0]), src=0)
    return {
        "dist_patched": isinstance(dc.dist, compat._DistWithTimeout),
        "decode_patched": FixedPointEncoder.decode is compat._decode,
        "group_timeout_s": dc.dist.group_timeout.total_seconds(),
        "value": (x * 2).get_plain_text().tolist(),
    }


def test_patches_hold_in_spawned_party_processes():
    results = run_parties(_inspect_child, 2, timeout=120)
    for r in results:
        assert r["dist_patched"] and r["decode_patched"]
        assert r["group_timeout_s"] == 30
        assert r["value"] == pytest.approx([-49.99938, 7.0, -2.0], abs=1e-3)


def test_decode_is_exact_for_negative_values_near_integers():
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
    from crypten.encoder import FixedPointEncoder

    encoder = FixedPointEncoder(precision_bits=16)
    values = torch.tensor([-24.99969, -1.00001, -0.5, -3.0, -100.0001, 2.99999, 0.0])
    decoded = encoder.decode(encoder.encode(values))
    # upstream decoded -24.99969 as -25.99969 (floor division by scale - 1)
    assert (decoded - values).abs().max() < 2**-15


def test_unpickling_loaders_are_disabled():
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
    import crypten

    with pytest.raises(RuntimeError, match="unpickles files and is disabled"):
        crypten.load("anything.pt")


def _join_alone(port: int, queue) -> None:
    from smpc import communicator

    started = time.monotonic()
    try:
        with communicator.gloo(0, 2, f"tcp://127.0.0.1:{port}", connect_timeout_s=3, op_timeout_s=3):
            queue.put(("joined", 0.0))
    except Exception as exc:  # expected: the other party never comes
        queue.put((type(exc).__name__, time.monotonic() - started))


def test_a_party_that_never_comes_makes_joining_fail_within_the_bound():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_join_alone, args=(free_port(), queue))
    child.start()
    try:
        outcome, waited = queue.get(timeout=90)
    finally:
        child.kill()
        child.join(10)
    assert outcome != "joined"
    assert waited < 30, f"waited {waited:.1f} s for a 3 s connect timeout"


def test_timeout_proxy_passes_through_other_attributes():
    import torch.distributed as dist

    from smpc import compat

    proxy = compat._DistWithTimeout(dist)
    assert proxy.get_rank is dist.get_rank and proxy.ReduceOp is dist.ReduceOp


def test_config_reads_are_cached_yet_every_way_of_changing_it_is_seen():
    # smpc.compat caches CrypTen's config sections (OmegaConf reads cost over half of a
    # forward pass's CPU); every way CrypTen and smpc change the config must still show
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
    from crypten.config import cfg

    before = cfg.encoder.precision_bits
    try:
        assert type(cfg.encoder).__name__ == "_CachedSection" and cfg.encoder is cfg.encoder
        cfg.encoder.precision_bits = 12  # a write through a cached section
        assert cfg.encoder.precision_bits == 12 and cfg["encoder.precision_bits"] == 12
        with cfg.temp_override({"encoder.precision_bits": 20}):  # the whole config swapped
            assert cfg.encoder.precision_bits == 20
        assert cfg.encoder.precision_bits == 12
        cfg.functions["exp_iterations"] = 5  # item writes, as switches.configure does
        assert cfg.functions.exp_iterations == 5 and cfg.functions["exp_iterations"] == 5
        cfg.__setattr__("debug.validation_mode", True)  # a merge: a new OmegaConf object
        assert cfg.debug.validation_mode is True
        cfg.__setattr__("debug.validation_mode", False)
        assert cfg.debug.validation_mode is False
    finally:
        cfg.encoder.precision_bits = before
        cfg.functions["exp_iterations"] = 8


def _openings(rank: int, world_size: int) -> dict:
    import crypten.communicator as comm
    import torch.distributed as dist

    if world_size == 2:
        # between two parties every opening is one exchange: gloo's ring all_reduce must
        # not run at all
        def refuse(*args, **kwargs):
            raise AssertionError("gloo's all_reduce ran between two parties")

        dist.all_reduce = refuse
    base = torch.arange(12, dtype=torch.int64).reshape(3, 4) * (rank + 1) + (1 << 62)
    transposed = base.t()  # not contiguous
    out = {
        "sum": comm.get().all_reduce(base),
        "sum of a transposed tensor": comm.get().all_reduce(transposed),
        "xor": comm.get().all_reduce(base, op=dist.ReduceOp.BXOR),
        "batched": comm.get().all_reduce([base, transposed, base[:1]], batched=True),
    }
    return {k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in out.items()}


@pytest.mark.parametrize("world_size", [2, 3])
def test_openings_sum_and_xor_the_shares_of_every_party(world_size):
    results = run_parties(_openings, world_size, timeout=120)
    shares = [torch.arange(12, dtype=torch.int64).reshape(3, 4) * (r + 1) + (1 << 62) for r in range(world_size)]
    total = sum(shares[1:], shares[0])  # wraps mod 2^64 as the ring does
    xor = shares[0]
    for s in shares[1:]:
        xor = xor ^ s
    for got in results:  # every party gets the same, exact in the ring
        assert torch.equal(got["sum"], total)
        assert torch.equal(got["sum of a transposed tensor"], total.t())
        assert torch.equal(got["xor"], xor)
        assert [t.tolist() for t in got["batched"]] == [total.tolist(), total.t().tolist(), total[:1].tolist()]


def _copies(rank: int, world_size: int) -> dict:
    import crypten
    import crypten.communicator as comm

    from smpc.protocols import csprng

    x = crypten.cryptensor(torch.arange(6, dtype=torch.float32).reshape(2, 3), src=0)
    drawn = csprng._drawn
    y = x.shallow_copy()
    y += 1  # an in-place op: works on the shared tensor, as CrypTen's copy does
    return {
        "drawn": csprng._drawn - drawn,
        "same tensor": y._tensor is x._tensor,
        "ptype": y.ptype == x.ptype,
        "grad": (y.requires_grad, y.grad_fn),
        "value": x.get_plain_text().tolist(),
        "rank": comm.get().get_rank(),
        "world size": comm.get().get_world_size(),
    }


def test_shallow_copies_draw_no_randomness_and_share_the_tensor():
    results = run_parties(_copies, 2, timeout=120)
    for rank, got in enumerate(results):
        assert got["drawn"] == 0  # CrypTen's own copy draws a zero-sharing of an empty tensor
        assert got["same tensor"] and got["ptype"] and got["grad"] == (False, None)
        assert got["value"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        assert (got["rank"], got["world size"]) == (rank, 2)
