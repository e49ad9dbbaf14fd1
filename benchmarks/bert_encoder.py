"""A BERT-family encoder of a real sentence-embedding size, privately: 2 parties and the
dealer through smpc.simulate, against plaintext PyTorch, ratios from one run.

6 layers, hidden 384, 12 heads, intermediate 1536 (`--size minilm`, the default) or
BERT-base's 12 layers, hidden 768, 12 heads, intermediate 3072 (`--size base`), vocabulary
30522 (random weights, scaled as real checkpoints are: word embeddings x0.05,
feed-forward weights x60), on padded batches of random token ids. Each setting is one simulate call: every row is one
batch, so the online time is that of one batch. MiB per sentence and rounds are a
party's for the batch; the set-up (the weights shared, their masks opened once) apart.

    .venv/bin/python benchmarks/bert_encoder.py [--settings 16x1 64x1 16x8 64x8] [--comparisons circuits fss]
    .venv/bin/python benchmarks/bert_encoder.py --size base --settings 128x1

The figures go to docs/results/bert_encoder.md (minilm) or docs/results/bert_base.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from results_page import results_page


SIZES = {
    "small": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
PAGES = {"minilm": "bert_encoder", "base": "bert_base"}


def build_model(size: str = "minilm", vocab_size: int = 30522) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(
        BertConfig(vocab_size=vocab_size, max_position_embeddings=512, attn_implementation="eager", **SIZES[size])
    ).eval()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(0.05)
        for layer in model.encoder.layer:
            layer.intermediate.dense.weight.mul_(60)
    return model


def inputs(seq: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seq * 100 + batch)
    ids = torch.randint(1000, 30522, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(1, batch, 2):  # every other sentence padded to 3/4 of its length
        mask[row, 3 * seq // 4 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def plain_seconds(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> float:
    torch.set_num_threads(1)  # as each party
    with torch.no_grad():
        model(ids, mask)  # warm-up
        start = time.perf_counter()
        model(ids, mask)
        return time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="minilm", choices=sorted(PAGES), help="the encoder's size")
    parser.add_argument("--settings", nargs="+", default=["16x1", "64x1", "16x8", "64x8"], help="SEQxBATCH")
    parser.add_argument("--comparisons", nargs="+", default=["circuits"], choices=["circuits", "fss"])
    return parser.parse_args()


# the parts of an encoder layer, by the module path under encoder.layer.N (first match)
PARTS = [
    ("attention.self.query", "Q K V"),
    ("attention.self.key", "Q K V"),
    ("attention.self.value", "Q K V"),
    ("attention.output.dense", "attn out"),
    ("attention.output.LayerNorm", "LayerNorm 1"),
    ("intermediate.dense", "FFN in"),
    ("intermediate.intermediate_act_fn", "GELU"),
    ("output.dense", "FFN out"),
    ("output.LayerNorm", "LayerNorm 2"),
]


def rounds_per_layer(rows: list[dict]) -> dict[str, int]:
    """Rounds of encoder layer 0 by part (softmax apart from the scores' and context's
    products), from a party's cost profile rows."""
    parts: dict[str, int] = {}
    for row in rows:
        layer = row["layer"].split(" ")[0]
        if not layer.startswith("encoder.layer.0."):
            continue
        path = layer.removeprefix("encoder.layer.0.")
        part = next((name for key, name in PARTS if path.startswith(key)), None)
        if part is None and path.startswith("attention.self"):  # the module's own ops
            part = "softmax" if row["op"].startswith("softmax") else "scores, context"
        if part is None:
            part = "other"
        parts[part] = parts.get(part, 0) + row["rounds"]
    return parts


def main(args: argparse.Namespace) -> None:
    import smpc

    model = build_model(args.size)
    print(f"{args.size}: " + ", ".join(f"{k} {v}" for k, v in SIZES[args.size].items()))
    print(
        f"{'comparisons':>11} {'seq':>4} {'batch':>5} {'online s/sent':>13} {'plain s/sent':>12} {'MPC/plain':>9} "
        f"{'MiB/sent':>8} {'rounds':>6} {'setup MiB':>9} {'peak MiB':>8} {'cosine':>9}"
    )
    per_layer = {}
    for setting, comparisons in ((s, c) for s in args.settings for c in args.comparisons):
        seq, batch = (int(v) for v in setting.split("x"))
        ids, mask = inputs(seq, batch)
        result = smpc.simulate(
            model,
            (ids, mask),
            parties=2,
            randomness="dealer",
            comparisons=comparisons,
            timeout_s=3600,
            op_timeout_s=600,
            quiet=True,
        )  # the dealer makes a large batch's material while the parties wait
        plain = plain_seconds(model, ids, mask) / batch
        online = result.online_s / batch
        # per party, the batch's bytes and rounds apart from the set-up's (agreement, the
        # weights shared and their masks opened once: a service pays it once per session)
        setup = {
            name: sum(r["bytes_sent"] for r in p["layers"] if r["layer"] == "<setup>")
            for name, p in result.report.parties.items()
        }
        mib = max(result.bytes_sent[n] - setup[n] for n in setup) / 2**20 / batch
        rounds = max(
            p["rounds"] - sum(r["rounds"] for r in p["layers"] if r["layer"] == "<setup>")
            for p in result.report.parties.values()
        )
        peak = max(p["peak_rss_mib"] for p in result.report.parties.values())
        print(
            f"{comparisons:>11} {seq:>4} {batch:>5} {online:>13.3f} {plain:>12.5f} {online / plain:>9.0f} {mib:>8.1f} "
            f"{rounds:>6} {max(setup.values()) / 2**20:>9.1f} {peak:>8.0f} {result.cosine:>9.6f}",
            flush=True,
        )
        busiest = max(result.report.parties, key=lambda n: result.report.parties[n]["rounds"])
        per_layer.setdefault(comparisons, rounds_per_layer(result.report.parties[busiest]["layers"]))
    for comparisons, parts in per_layer.items():
        listed = ", ".join(f"{name} {count}" for name, count in parts.items() if count)
        print(f"rounds per encoder layer ({comparisons}, layer 0): {listed}; total {sum(parts.values())}")


if __name__ == "__main__":
    arguments = parse_args()
    with results_page(PAGES[arguments.size]):
        main(arguments)
