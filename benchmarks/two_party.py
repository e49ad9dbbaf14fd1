"""Two parties without a dealer, from one run: the correlated randomness made by OT and
homomorphic encryption, then whole models beside the dealer.

Two real party processes (gloo, one torch thread each) run the base OTs, then make a
batch of each kind of item the two-party source supplies from oblivious transfer
(smpc.twoparty.triples), twice: the table gives the second round, per kind, the items
made per second, the bytes each party sent per item, its rounds, and the ratio of those
bytes to what the trusted dealer sends per item (8 bytes to party 0: the correction of a
triple, square, AND word or shared bit; a comparison's 1-out-of-16 OTs and bit triples
against the dealer's circuits' 13 AND words and a bit); then matrix triples by
homomorphic encryption (Cheetah's coefficient packing), with their multiply-adds per
second and bytes per multiply-add.

Then the models, each launched with randomness: two-party and with the dealer: the
digits demo (its two shipped configs, 360 digits), LeNet-5 at batch 1 (16 samples) and
64 (128 samples), and the suite's small BERT (2 layers, hidden 64, one padded sentence
of 16 ids): offline and online seconds, MiB and rounds per party, peak memory, and the
ratios of the total time to the dealer's and to SecretFlow SPU's Cheetah on the same
work (measured on this machine: 46.2 s, 18.9 s and 43.6 s).

    python benchmarks/two_party.py [--items N] [--no-models]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from typing import Any

from results_page import results_page

KINDS = ("Beaver triples", "squares", "AND words", "shared bits", "comparisons")
# matrix triples [n, k] @ [k, m]; the last is the digits CNN's second convolution at batch 60 (im2col)
MATMULS = ((64, 64, 64), (256, 64, 16), (3840, 144, 32))
DEALER_BYTES = 8  # per item, to party 0
# the dealer's bytes per comparison with circuits: 13 AND words' corrections and a B2A bit's
DEALER_COMPARISON_BYTES = 14 * DEALER_BYTES
# SecretFlow SPU 0.9.5's Cheetah on the same work, measured on this machine (seconds in all)
SPU_CHEETAH = {"digits demo": 46.2, "LeNet-5 b1": 18.9, "LeNet-5 b64": 43.6}


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
        makers = (ot.mul_triples, ot.squares, ot.and_triples, ot.shared_bits, ot.comparisons)
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
    parser.add_argument("--no-models", action="store_true", help="the correlated randomness only")
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
        dealer = DEALER_COMPARISON_BYTES if kind == "comparisons" else DEALER_BYTES
        print(f"{kind:<16}{seconds:>9.3f}{args.items / seconds:>11,.0f}{per:>9.0f}{rounds:>8}{per / dealer:>12.0f}")
    total = sum(rows[kind][0] for kind in KINDS)
    print(
        f"(OT rows: the second round of each kind; the first took {rows['first round'][0]:.3f} s against "
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
    if not args.no_models:
        print()
        models()
    return 0


def _small_bert(randomness: str) -> Any:
    import torch

    import smpc
    from bert_encoder import build_model

    model = build_model("small", vocab_size=400)
    g = torch.Generator().manual_seed(16)
    ids = torch.randint(1, 400, (1, 16), generator=g)
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 12:] = 0
    ids[mask == 0] = 0
    return smpc.simulate(model, (ids, mask), randomness=randomness, timeout_s=3600, quiet=True).report


def models() -> None:
    """The models with randomness: two-party and with the dealer, one run each."""
    import tempfile
    from pathlib import Path

    from common import launch_model
    from launch import run
    from smpc.config import load_config

    root = Path(__file__).resolve().parent.parent
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for randomness, config in (("two-party", "local-2pc-two-party.yaml"), ("dealer", "local-2pc.yaml")):
            reports.setdefault("digits demo", {})[randomness] = run(load_config(root / "configs" / config), echo=False)
        for batch, batches in ((1, 16), (64, 2)):
            for randomness in ("two-party", "dealer"):
                label = f"LeNet-5 b{batch}"
                reports.setdefault(label, {})[randomness], _ = launch_model(
                    Path(tmp), f"{label} {randomness}", "lenet5", (1, 28, 28), batch, batches, randomness=randomness
                )
        for randomness in ("two-party", "dealer"):
            reports.setdefault("small BERT", {})[randomness] = _small_bert(randomness)
            print(f"done: small BERT {randomness}", file=sys.stderr, flush=True)
    print("Models, 2 parties on this machine: offline and online seconds, then MiB and rounds per party (the")
    print("busier one), peak memory; total = offline + online; the dealer's offline is its first material")
    print(
        f"{'model':<13}{'source':<10}{'offline s':>10}{'online s':>9}{'total s':>9}{'off MiB':>9}{'off rnd':>8}"
        f"{'on MiB':>8}{'on rnd':>7}{'peak MiB':>9}{'/dealer':>8}{'/SPU':>6}"
    )
    for label, by_source in reports.items():
        dealer_total = by_source["dealer"].offline_s + by_source["dealer"].online_s
        for source, report in by_source.items():
            party = max(report.parties.values(), key=lambda p: p["bytes_sent"] + (p.get("offline_bytes") or 0))
            total = report.offline_s + report.online_s
            spu = f"{total / SPU_CHEETAH[label]:>6.2f}" if label in SPU_CHEETAH else f"{'':>6}"
            print(
                f"{label:<13}{source:<10}{report.offline_s:>10.2f}{report.online_s:>9.2f}{total:>9.2f}"
                f"{(party.get('offline_bytes') or 0) / 2**20:>9.1f}{party.get('offline_rounds') or 0:>8}"
                f"{party['bytes_sent'] / 2**20:>8.1f}{party['rounds']:>7}{party['peak_rss_mib']:>9.0f}"
                f"{total / dealer_total:>8.2f}{spu}"
            )


if __name__ == "__main__":
    with results_page("two_party"):
        code = main()
    sys.exit(code)
