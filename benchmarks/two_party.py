"""Two parties without a dealer, from one run: the correlated randomness made by OT.

Two real party processes (gloo, one torch thread each) run the base OTs, then make a
batch of each kind of item the two-party source supplies from oblivious transfer
(smpc.twoparty.triples), twice: the table gives the second round, per kind, the items made per second, the
bytes each party sent per item, its rounds, and the ratio of those bytes to what the
trusted dealer sends per item (8 bytes to party 0: the correction of a triple, square,
AND word or shared bit); then matrix triples by homomorphic encryption (Cheetah's
coefficient packing), with their multiply-adds per second and bytes per multiply-add. The models (the issue's digits demo, LeNet-5, the small BERT)
join this benchmark when the two-party source runs them.

    python benchmarks/two_party.py [--items N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

from results_page import results_page

KINDS = ("Beaver triples", "squares", "AND words", "shared bits")
# matrix triples [n, k] @ [k, m]; the last is the digits CNN's second convolution at batch 60 (im2col)
MATMULS = ((64, 64, 64), (256, 64, 16), (3840, 144, 32))
DEALER_BYTES = 8  # per item, to party 0


def _party(rank: int, ports: list[int], items: int, out: mp.Queue) -> None:
    import torch

    torch.set_num_threads(1)
    from smpc.runtime import Runtime
    from smpc.twoparty.link import Link
    from smpc.twoparty.triples import OtCorrelations

    from smpc.twoparty.matrix_triples import MatrixTriples

    with Runtime().joined(rank, ["alice", "bob"], [("127.0.0.1", p) for p in ports], 60, 300):
        link = Link()
        ot = OtCorrelations(link)
        started = time.perf_counter()
        ot.setup()
        rows = {"base OTs": (time.perf_counter() - started, link.bytes_sent, link.rounds)}
        makers = (ot.mul_triples, ot.squares, ot.and_triples, ot.shared_bits)
        started = time.perf_counter()
        for make in makers:  # the first round, apart: the processes' first large buffers
            make(items)
        rows["first round"] = (time.perf_counter() - started, 0, 0)
        for kind, make in zip(KINDS, makers):
            sent, rounds, started = link.bytes_sent, link.rounds, time.perf_counter()
            make(items)
            rows[kind] = (time.perf_counter() - started, link.bytes_sent - sent, link.rounds - rounds)
        started = time.perf_counter()
        he = MatrixTriples(link)
        he.setup()
        rows["keys"] = (time.perf_counter() - started, 0, 0)
        for shape in MATMULS:
            sent, rounds, started = link.bytes_sent, link.rounds, time.perf_counter()
            he.matmul_triples(*shape)
            rows[shape] = (time.perf_counter() - started, link.bytes_sent - sent, link.rounds - rounds)
    out.put((rank, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1 << 16, help="items of each kind (default 65,536)")
    args = parser.parse_args(argv)
    from smpc.runs.processes import free_port

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ports = [free_port(), free_port()]
    procs = [ctx.Process(target=_party, args=(rank, ports, args.items, out)) for rank in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=900) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    rows = results[0]
    print(f"OT-made correlated randomness, 2 parties over gloo, {args.items:,} items of each kind; party 0's figures")
    print(f"{'kind':<16}{'seconds':>9}{'items/s':>11}{'B/item':>9}{'rounds':>8}{'B/dealer B':>12}")
    seconds, sent, rounds = rows["base OTs"]
    print(f"{'base OTs':<16}{seconds:>9.3f}{'':>11}{sent:>9}{rounds:>8}{'':>12}")
    for kind in KINDS:
        seconds, sent, rounds = rows[kind]
        per = sent / args.items
        print(
            f"{kind:<16}{seconds:>9.3f}{args.items / seconds:>11,.0f}{per:>9.0f}{rounds:>8}{per / DEALER_BYTES:>12.0f}"
        )
    total = sum(rows[kind][0] for kind in KINDS)
    print(
        f"(OT rows: the second round of the four kinds; the first took {rows['first round'][0]:.3f} s against "
        f"{total:.3f} s: {rows['first round'][0] / total:.2f}x, the processes' first large buffers)"
    )
    print()
    print(f"Matrix triples by homomorphic encryption (keys made and exchanged in {rows['keys'][0]:.3f} s)")
    print(f"{'n x k x m':<16}{'seconds':>9}{'MAC/s':>11}{'B/MAC':>9}{'rounds':>8}{'B/dealer B':>12}")
    for shape in MATMULS:
        seconds, sent, rounds = rows[shape]
        macs = shape[0] * shape[1] * shape[2]
        dealer = shape[0] * shape[2] * DEALER_BYTES  # the dealer corrects C only
        label = " x ".join(map(str, shape))
        print(f"{label:<16}{seconds:>9.3f}{macs / seconds:>11,.0f}{sent / macs:>9.0f}{rounds:>8}{sent / dealer:>12.0f}")
    return 0


if __name__ == "__main__":
    with results_page("two_party"):
        code = main()
    sys.exit(code)
