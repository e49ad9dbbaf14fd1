"""Two-party preprocessing without a dealer: sums of products by homomorphic encryption
(SEAL's BFV, exact in Z/2^64 by the CRT), and the matrix triples made from them between
two real party processes."""

from __future__ import annotations

import numpy as np
import pytest
import seal
import torch

from harness import run_parties
from smpc.twoparty import he
from smpc.twoparty.he import N, HeError, HeParty

EDGES = np.array([0, 1, -1, 2, 1 << 62, -(1 << 62), (1 << 63) - 1, -(1 << 63), 12345, -98765], dtype=np.int64)
RING = 1 << 64


@pytest.fixture(scope="module")
def pair() -> tuple[HeParty, HeParty]:
    x, y = HeParty(), HeParty()
    x.peer_keys(y.public_keys())
    y.peer_keys(x.public_keys())
    return x, y


def _exact(x: np.ndarray, y: np.ndarray, share_x: np.ndarray, share_y: np.ndarray) -> bool:
    want = (x.astype(object) * y.astype(object)).sum(axis=0)
    return all((int(a) + int(b)) % RING == int(w) % RING for a, b, w in zip(share_x, share_y, want))


def test_sums_of_products_are_exact_in_the_ring_on_edge_values(pair):
    x_party, y_party = pair
    rng = np.random.default_rng(7)
    for terms, slots in ((1, len(EDGES)), (3, N + 5)):  # one term; several, past one ciphertext
        x = rng.integers(-(1 << 63), (1 << 63) - 1, size=(terms, slots), dtype=np.int64, endpoint=True)
        y = rng.integers(-(1 << 63), (1 << 63) - 1, size=(terms, slots), dtype=np.int64, endpoint=True)
        x[:, : len(EDGES)] = EDGES
        y[:, : len(EDGES)] = EDGES[::-1]
        y[:, -3:] = 0  # a zero column: SEAL refuses an all-zero product, not a zero slot
        back, share_y = y_party.multiply(x_party.encrypt(x), y)
        assert _exact(x, y, x_party.decrypt(back, slots), share_y)


def test_a_term_of_all_zeros_is_skipped_not_refused(pair):
    x_party, y_party = pair
    x = np.stack([EDGES, EDGES])
    y = np.stack([np.zeros_like(EDGES), EDGES])
    back, share_y = y_party.multiply(x_party.encrypt(x), y)
    assert _exact(x, y, x_party.decrypt(back, len(EDGES)), share_y)


def test_x_decrypts_a_uniform_value_whatever_y_holds(pair):
    # X's share z - R: its bits are balanced for y = 0 and for y = the ring's extremes
    x_party, y_party = pair
    slots = 4096
    x = np.full((2, slots), (1 << 63) - 1, dtype=np.int64)
    for y in (np.zeros((2, slots), dtype=np.int64), np.full((2, slots), -(1 << 63), dtype=np.int64)):
        y[0, 0] = 1  # not all zero
        back, _ = y_party.multiply(x_party.encrypt(x), y)
        bits = np.unpackbits(x_party.decrypt(back, slots).view(np.uint8))
        assert abs(bits.mean() - 0.5) < 6 * 0.5 / np.sqrt(bits.size)


def test_the_same_values_encrypt_to_fresh_ciphertexts(pair):
    x_party, _ = pair
    first, second = x_party.encrypt(EDGES.reshape(1, -1)), x_party.encrypt(EDGES.reshape(1, -1))
    assert first[0] != second[0]


def test_flooding_lands_in_the_noise_and_keeps_the_value(pair):
    # the serialized form's offsets are SEAL's: a flooded ciphertext decrypts to the same
    # value, and its noise budget (log2 of q / t over the noise) falls bit for bit with
    # the flooding's width
    x_party, _ = pair
    prime = x_party.primes[0]
    values = np.arange(N, dtype=np.uint64) % np.uint64(prime.t)
    ct = prime.encryptor.encrypt_symmetric(prime.encoder.encode(values))
    budgets = {}
    for bits in (100, 120):
        flooded = seal.Ciphertext()
        flooded.load_bytes(prime.context, x_party._flood(prime, ct.to_string(), bits))
        assert np.array_equal(prime.encoder.decode_uint64(prime.decryptor.decrypt(flooded)), values)
        budgets[bits] = prime.decryptor.invariant_noise_budget(flooded)
    assert budgets[100] <= prime.decryptor.invariant_noise_budget(ct) - 30
    assert budgets[100] - budgets[120] in range(18, 23)
    with pytest.raises(ValueError, match="past this module's 127-bit draws"):
        x_party._flood(prime, ct.to_string(), 127)


def test_malformed_ciphertexts_and_keys_are_refused_by_name(pair):
    x_party, y_party = pair
    good = x_party.encrypt(EDGES.reshape(1, -1))
    y = EDGES.reshape(1, -1)
    with pytest.raises(HeError, match="expected 5 ciphertexts, got 4"):
        y_party.multiply(good[:4], y)
    garbage = good[0][:200] + b"\xff" * (len(good[0]) - 200)
    with pytest.raises(HeError, match="ciphertext 0 is not a valid ciphertext for the parameters"):
        y_party.multiply([garbage] + good[1:], y)
    with pytest.raises(HeError, match="public key 0 is not valid for the parameters"):
        HeParty().peer_keys([b"\x00" * 100] + x_party.public_keys()[1:])
    with pytest.raises(HeError, match="expected 5 public keys, got 1"):
        HeParty().peer_keys(x_party.public_keys()[:1])


def test_the_mask_is_wide_enough_for_statistical_security():
    party = HeParty()
    for terms in (1, 9, 4096):
        words = party.masks(terms, 64)
        mask = [sum(int(w) << (64 * i) for i, w in enumerate(row)) for row in words]
        bound = 127 + max(1, terms - 1).bit_length()  # |sum| < terms 2^126
        assert max(mask).bit_length() > bound + he.SIGMA - 8  # the draws fill the range
        assert max(mask).bit_length() <= bound + he.SIGMA
    with pytest.raises(ValueError, match="does not fit the plaintext primes"):
        party.masks(1 << 40, 1)


# -- between two real parties -----------------------------------------------------


def _matrix_triples(rank: int, world_size: int) -> dict:
    from smpc.twoparty.link import Link
    from smpc.twoparty.matrix_triples import MatrixTriples

    triples = MatrixTriples(Link())
    triples.setup()
    a_edge = np.resize(EDGES, (4, 5)) * (rank + 1)
    b_edge = np.resize(EDGES[::-1], (5, 3))
    return {
        "cross": torch.from_numpy(triples.cross(a_edge, b_edge)),
        "triple": triples.matmul_triples(6, 7, 3),
        "rounds": triples.link.rounds,
    }


def test_matrix_triples_made_by_the_two_parties_alone_are_exact():
    p0, p1 = run_parties(_matrix_triples, 2, timeout=300)
    a_edge = [torch.from_numpy(np.resize(EDGES, (4, 5)) * (r + 1)) for r in range(2)]
    b_edge = torch.from_numpy(np.resize(EDGES[::-1], (5, 3)))
    # A_0 B_1 + A_1 B_0 with B_0 = B_1 = b_edge
    assert torch.equal(p0["cross"] + p1["cross"], a_edge[0] @ b_edge + a_edge[1] @ b_edge)
    a, b, c = (p0["triple"][i] + p1["triple"][i] for i in range(3))
    assert torch.equal(a @ b, c)
    assert p0["rounds"] == 1 + 2 + 2  # the keys, then two exchanges per triple


def _fixed_products(rank: int, world_size: int) -> dict:
    from smpc.twoparty.link import Link
    from smpc.twoparty.matrix_triples import MatrixTriples

    triples = MatrixTriples(Link())
    triples.setup()
    rng = np.random.default_rng(rank)
    w = rng.integers(-(1 << 63), (1 << 63) - 1, size=(9, 4), dtype=np.int64, endpoint=True)  # a weight mask's share
    w.flat[: len(EDGES)] = EDGES
    out = {"w": torch.from_numpy(w), "a": [], "cross": [], "sent": []}
    for _ in range(3):
        a = rng.integers(-(1 << 63), (1 << 63) - 1, size=(5, 9), dtype=np.int64, endpoint=True)
        sent = triples.link.bytes_sent
        out["cross"].append(torch.from_numpy(triples.cross(a, w, fixed="layer.weight")))
        out["sent"].append(triples.link.bytes_sent - sent)
        out["a"].append(torch.from_numpy(a))
    out["other"] = torch.from_numpy(triples.cross(out["a"][0].numpy(), w + 1, fixed="other.weight"))
    triples.forget_kept()  # the offline phase is over: what comes after crosses again
    sent = triples.link.bytes_sent
    triples.cross(out["a"][0].numpy(), w, fixed="layer.weight")
    out["after"] = triples.link.bytes_sent - sent
    return out


def test_a_weights_ciphertexts_cross_once_and_serve_every_batch():
    p0, p1 = run_parties(_fixed_products, 2, timeout=300)
    for batch in range(3):
        want = p0["a"][batch] @ p1["w"] + p1["a"][batch] @ p0["w"]
        assert torch.equal(p0["cross"][batch] + p1["cross"][batch], want), batch
    # the first batch sends our ciphertexts of w and the results; the later ones the results alone
    first, second, third = p0["sent"]
    assert second == third == he.PRIMES * he.RESULT_BYTES
    assert first == second + he.PRIMES * he.FRESH_BYTES
    assert p0["after"] == first
    # another name is another operand: its ciphertexts cross
    assert torch.equal(p0["other"] + p1["other"], p0["a"][0] @ (p1["w"] + 1) + p1["a"][0] @ (p0["w"] + 1))


def _hostile_products(rank: int, world_size: int) -> str:
    from smpc.errors import PartyError
    from smpc.twoparty.link import Link
    from smpc.twoparty.matrix_triples import MatrixTriples

    triples = MatrixTriples(Link(peer=f"p{1 - rank}"))
    triples.setup()
    if rank == 1:  # sends ciphertexts of the right size and garbage content, then leaves
        size = he.FRESH_BYTES * he.PRIMES  # a [1, 2] by [2, 1] product: one block a prime
        triples.link.exchange(b"\x07" * size, size)
        return ""
    try:
        triples.cross(np.ones((1, 2), dtype=np.int64), np.ones((2, 1), dtype=np.int64))
    except PartyError as error:
        return str(error)
    return "no error"


def test_a_peer_that_sends_garbage_ciphertexts_is_named():
    message = run_parties(_hostile_products, 2, timeout=300)[0]
    assert message.startswith(
        "p1 broke the protocol in the two-party preprocessing (matrix products): "
        "ciphertext 0 is not a valid ciphertext for the parameters"
    )


# -- Cheetah's coefficient packing ------------------------------------------------------


def test_packed_matrix_products_are_exact_in_the_ring_on_edge_values(pair):
    from smpc.twoparty.packing import MatrixProducts, plan

    x_party, y_party = pair
    rng = np.random.default_rng(11)
    for n, k, m in ((37, 20, 9), (1, 1, 1), (5, 300, 3)):  # blocks cut and padded; a long k
        a = rng.integers(-(1 << 63), (1 << 63) - 1, size=(n, k), dtype=np.int64, endpoint=True)
        b = rng.integers(-(1 << 63), (1 << 63) - 1, size=(k, m), dtype=np.int64, endpoint=True)
        a.flat[: min(a.size, len(EDGES))] = EDGES[: a.size]
        b.flat[: min(b.size, len(EDGES))] = EDGES[::-1][: b.size]
        dims = plan(n, k, m)
        assert dims[0] * dims[1] * dims[2] <= N
        loaded = MatrixProducts(y_party).load(MatrixProducts(x_party).encrypt(b, dims), k, m, dims)
        back, share_y = MatrixProducts(y_party).multiply(loaded, a, m, dims)
        share_x = MatrixProducts(x_party).decrypt(back, n, m, dims)
        want = a.astype(object) @ b.astype(object)
        got = [(int(u) + int(v)) % RING for u, v in zip(share_x.reshape(-1), share_y.reshape(-1))]
        assert got == [int(w) % RING for w in want.reshape(-1)], (n, k, m)


def test_a_kept_operand_is_planned_for_the_bytes_of_a_batch_within_its_memory():
    from smpc.twoparty.packing import KEPT_LIMIT, plan

    def sent(n, k, m, dims, uses):  # bytes a product, B's ciphertexts spread over `uses` products
        n_w, k_w, m_w = dims
        encrypted, results = -(-k // k_w) * -(-m // m_w), -(-n // n_w) * -(-m // m_w)
        return encrypted * he.FRESH_BYTES / uses + results * he.RESULT_BYTES, encrypted

    fewer = 0
    for n, k, m in ((3840, 144, 32), (4096, 150, 16), (64, 400, 120), (60, 512, 10), (1, 1, 1), (4096, 4096, 4096)):
        free, kept = plan(n, k, m), plan(n, k, m, kept_for=6)
        assert kept[0] * kept[1] * kept[2] <= N
        assert plan(n, k, m, kept_for=1) == free  # one use: nothing to spread
        kept_bytes, encrypted = sent(n, k, m, kept, 6)
        assert kept_bytes <= sent(n, k, m, free, 6)[0]
        fewer += kept != free
        if (n, k, m) != (4096, 4096, 4096):
            assert he.PRIMES * encrypted * he.FRESH_BYTES <= KEPT_LIMIT
        else:  # past the limit whatever the plan: sent afresh, the fewest bytes
            assert kept == free
    assert fewer >= 3


def test_packed_results_show_the_decrypting_party_nothing_but_its_masked_outputs(pair):
    # the coefficients that are not outputs hold the blocks' partial sums before they are
    # covered: with small operands those would be small; covered, they are uniform mod t
    from smpc.twoparty.packing import MatrixProducts, _coefficients, _outputs, plan

    x_party, y_party = pair
    n, k, m = 16, 8, 4
    dims = plan(n, k, m)
    loaded = MatrixProducts(y_party).load(
        MatrixProducts(x_party).encrypt(np.ones((k, m), dtype=np.int64), dims), k, m, dims
    )
    back, _ = MatrixProducts(y_party).multiply(loaded, np.ones((n, k), dtype=np.int64), m, dims)
    prime = x_party.primes[0]
    values = _coefficients(prime.decryptor.decrypt(x_party.load(prime, back[0], "a result")))
    others = np.delete(values, _outputs(*dims).reshape(-1))
    assert (others < (1 << 20)).mean() < 0.01
    assert abs(others.astype(np.float64).mean() / prime.t - 0.5) < 0.02


def test_the_modular_helpers_agree_with_python_integers():
    import math
    import random

    from smpc.protocols.csprng import AesCtrGenerator
    from smpc.twoparty import modular

    rng, generator = random.Random(1), AesCtrGenerator(bytes(32))
    for q in (3, 65537, 1099510005761, 17592186028033):  # small, and SEAL's prime sizes
        a = np.array([rng.randrange(q) for _ in range(500)] + [0, q - 1], dtype=np.uint64)
        b = np.array([rng.randrange(q) for _ in range(500)] + [q - 1, q - 1], dtype=np.uint64)
        assert [int(v) for v in modular.mulmod(a, b, q)] == [int(x) * int(y) % q for x, y in zip(a, b)]
        words = generator.ring((300, 3)).numpy().view(np.uint64)
        whole = [int(w[0]) + (int(w[1]) << 64) + (int(w[2]) << 128) for w in words]
        assert [int(v) for v in modular.residues(words, q)] == [v % q for v in whole]
        drawn = modular.uniform(generator, 4000, q)
        assert (drawn < q).all() and (q < 4 or len(set(drawn.tolist())) > 3000)
    for shift in (1, 63, 64, 100, 127):
        words = generator.ring((50, 2)).numpy().view(np.uint64)
        got = modular.shifted(words, shift)
        assert [int(g[0]) + (int(g[1]) << 64) for g in got] == [(int(w[0]) + (int(w[1]) << 64)) >> shift for w in words]
    primes = [p.t for p in HeParty().primes]
    total = math.prod(primes)
    values = [rng.randrange(total) for _ in range(1000)] + [0, 1, total // 2, total // 2 + 1, total - 1]
    rows = np.array([[v % t for v in values] for t in primes], dtype=np.uint64)
    want = [(v - total if v > total // 2 else v) % RING for v in values]
    assert [int(v) % RING for v in modular.Crt(primes).signed_low_words(rows)] == want
    with pytest.raises(ValueError, match="below 2\\^44"):
        modular.mulmod(a, b, 1 << 44)


# -- every product a triple is for, as sums of products and as matrices -------------------


def _product_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    g = torch.Generator().manual_seed(0)

    def ring(*shape: int) -> torch.Tensor:
        values = torch.randint(-(2**62), 2**62, shape, generator=g) * 2 - 1  # odd: both halves of the ring
        values.view(-1)[: len(EDGES)] = torch.from_numpy(EDGES)[: values.numel()]
        return values

    return [
        ("mul", ring(3, 4), ring(4), {}),
        ("mul", ring(2, 1, 3), ring(1, 5, 1), {}),
        ("matmul", ring(3, 4), ring(4, 5), {}),
        ("matmul", ring(4), ring(4, 5), {}),
        ("matmul", ring(3, 4), ring(4), {}),
        ("matmul", ring(2, 3, 4), ring(4, 5), {}),
        ("matmul", ring(2, 1, 3, 4), ring(5, 4, 2), {}),
        ("conv2d", ring(2, 3, 6, 6), ring(4, 3, 3, 3), {"padding": 1}),
        (
            "conv2d",
            ring(1, 4, 7, 5),
            ring(6, 2, 3, 2),
            {"stride": (2, 1), "dilation": 2, "groups": 2, "padding": (1, 0)},
        ),
        ("conv1d", ring(2, 3, 9), ring(4, 3, 3), {"stride": 2, "padding": 1}),
    ]


@pytest.mark.parametrize("op,a,b,kwargs", _product_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_product_is_exact_in_the_form_the_homomorphic_layer_computes(op, a, b, kwargs):
    from smpc.dealer.material import PRODUCTS
    from smpc.twoparty import bilinear

    want = PRODUCTS[op](a, b, **kwargs)  # int64: wraps as the ring
    if op == "mul":
        y, x, shape = bilinear.terms(op, a, b, kwargs)
        assert torch.equal((y * x).sum(0).view(shape), want)
        assert bilinear.sizes(op, a.shape, b.shape, kwargs) == tuple(y.shape)
    else:
        pairs, assemble = bilinear.matrices(op, a, b, kwargs)
        assert torch.equal(assemble([left @ right for left, right in pairs]), want)
        assert bilinear.matrix_shapes(op, a.shape, b.shape, kwargs) == [
            (left.shape[0], left.shape[1], right.shape[1]) for left, right in pairs
        ]
