"""The secure generator: a known answer, its ranges, and that the streams two parties
must share agree while the private ones differ from run to run."""

from __future__ import annotations

import re

import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smpc.protocols import csprng
from tests.harness import ROOT, run_parties


def test_the_stream_is_aes_256_ctr_of_the_key():
    key = bytes(range(32))
    want = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(48))
    g = csprng.AesCtrGenerator(key)
    first = g.ring((2,))
    rest = g.ring((2, 2))
    assert first.numpy().tobytes() + rest.numpy().tobytes() == want  # in order, nothing skipped
    again = csprng.AesCtrGenerator(key).ring((6,))
    assert again.numpy().tobytes() == want


def test_ranges_and_shapes():
    g = csprng.AesCtrGenerator()
    for bits in (1, 2, 17, 63):
        x = g.bits((4096,), bits)
        assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < 2**bits
    assert set(g.bits((4096,), 1).tolist()) == {0, 1}
    ring = g.ring((64, 64))
    assert ring.shape == (64, 64) and int(ring.min()) < -(2**62) and int(ring.max()) > 2**62
    ones = torch.stack([(ring >> k) & 1 for k in range(64)]).float().mean()
    assert 0.49 < float(ones) < 0.51
    assert g.ring(()).shape == () and g.ring((0, 3)).shape == (0, 3)
    with pytest.raises(ValueError, match="1..63 bits"):
        g.bits((2,), 64)
    with pytest.raises(ValueError, match="32 bytes"):
        g.reseed(b"short")


def test_keys_seeds_and_sub_streams():
    a, b = csprng.AesCtrGenerator(), csprng.AesCtrGenerator()
    assert not torch.equal(a.ring((8,)), b.ring((8,)))  # fresh keys from the OS
    assert torch.equal(csprng.AesCtrGenerator().reseed(7).ring((4,)), csprng.AesCtrGenerator().reseed(7).ring((4,)))
    key = bytes(32)
    assert csprng.derive(key, "batch", 1, 0) != csprng.derive(key, "batch", 1, 1) != csprng.derive(key, "batch", 10)
    assert len(csprng.derive(key, "x")) == 32


def test_crypten_draws_only_from_the_secure_generator():
    from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)

    import crypten
    from crypten.common import rng
    from crypten.mpc.primitives import arithmetic, binary
    from crypten.mpc.provider import tfp_provider

    for module in (rng, arithmetic, binary, tfp_provider):
        assert module.generate_random_ring_element is csprng.ring_element
        assert module.generate_kbit_random_tensor is csprng.kbit_tensor
    assert crypten._setup_prng.__module__ == "smpc.compat"
    with pytest.raises(TypeError, match="expected an AesCtrGenerator"):
        rng.generate_random_ring_element((2,), generator=torch.Generator())


def test_no_predictable_generator_is_left_in_the_code():
    for folder in ("smpc", "parties"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"torch\.manual_seed\(|torch\.Generator\(", text), path


def _streams(rank: int, world: int) -> dict[str, list[int]]:
    import crypten

    cpu = torch.device("cpu")
    return {key: crypten.generators[key][cpu].ring((4,)).tolist() for key in ("prev", "next", "local", "global")}


@pytest.mark.parametrize("world", [2, 3])
def test_shared_streams_agree_and_private_ones_differ_run_to_run(world):
    first = run_parties(_streams, world)
    for r in range(world):
        assert first[r]["next"] == first[(r + 1) % world]["prev"]  # the pairwise zero-sharing key
        assert first[r]["global"] == first[0]["global"]
        assert first[r]["local"] not in [first[o]["local"] for o in range(world) if o != r]
    second = run_parties(_streams, world)
    for r in range(world):
        for key in ("prev", "next", "local", "global"):
            assert second[r][key] != first[r][key]  # fresh 256-bit keys every session
