"""The text demo (`make text-demo`): a BERT-family classifier on text, private end to end.

1. The model owner (bob) trains a small BertForSequenceClassification on generated review
   sentences (positive or negative; no download) and packs it: the converted program and
   the weights, in `runs/text-demo/model`.
2. The data owner (alice) tokenizes its own held-out sentences with the WordPiece
   tokenizer that comes with the model (tokens never leave alice in the clear): its data
   file holds `input_ids`, `attention_mask` and `labels`.
3. `smpc launch` runs both parties and the dealer: the token ids are shared as one-hot
   rows, the embeddings are looked up on shares, and only alice learns the logits. The
   report gives the accuracy and the fidelity to plaintext.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "text-demo"
SEQ = 16
GOOD = [
    "great",
    "wonderful",
    "excellent",
    "lovely",
    "brilliant",
    "superb",
    "enjoyable",
    "delightful",
    "fantastic",
    "charming",
]
BAD = ["awful", "terrible", "boring", "dreadful", "poor", "dull", "horrible", "disappointing", "weak", "tedious"]
THINGS = ["film", "movie", "story", "plot", "acting", "music", "ending", "cast", "script", "soundtrack"]
FRAMES = [
    "the {t} was {w}",
    "what a {w} {t}",
    "i found the {t} {w}",
    "honestly the {t} felt {w} to me",
    "a {w} {t} from start to finish",
    "my friends thought the {t} was {w}",
    "{w} , simply {w}",
    "the {t} and the {t2} were both {w}",
    "overall a {w} experience",
    "it was a {w} {t} , really",
]


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = GOOD if label else BAD
        frame = rng.choice(FRAMES)
        texts.append(frame.format(t=rng.choice(THINGS), t2=rng.choice(THINGS), w=rng.choice(words)))
        labels.append(label)
    return texts, labels


def train(work: Path):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification

    texts, labels = sentences(1200, seed=0)
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(texts, vocab_size=200, min_frequency=1, show_progress=False)
    tokenizer.enable_padding(length=SEQ)
    tokenizer.enable_truncation(SEQ)
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=SEQ,
            num_labels=2,
            attn_implementation="eager",
        )
    )
    ids, mask = encode(tokenizer, texts)
    y = torch.tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _epoch in range(3):
        for start in range(0, len(y), 32):
            out = model(ids[start : start + 32], attention_mask=mask[start : start + 32], labels=y[start : start + 32])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    model.eval()
    tokenizer.save(str(work / "tokenizer.json"))
    return model, tokenizer


def encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer.encode_batch(texts)
    return torch.tensor([e.ids for e in batch]), torch.tensor([e.attention_mask for e in batch])


def main() -> int:
    import smpc
    from smpc.runs.processes import free_port
    from launch.cli import main as launch_main
    from smpc import artifacts

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    print("bob: training a BertForSequenceClassification on generated reviews (a few seconds)", flush=True)
    model, tokenizer = train(WORK)
    batch = 20
    texts, labels = sentences(100, seed=1)  # alice's own held-out sentences
    ids, mask = encode(tokenizer, texts)  # alice tokenizes locally
    model_dir = WORK / "model"
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    # one shape: this one-off run computes batches of 20 (a service packs every bucket)
    smpc.pack(model, (ids[:batch],), model_dir, {"attention_mask": mask[:batch]}, buckets=False)
    artifacts.save_inputs(WORK / "alice.safetensors", {"input_ids": ids, "attention_mask": mask}, torch.tensor(labels))
    config = {
        "version": 1,
        "parties": [
            {
                "name": "alice",
                "host": "127.0.0.1",
                "port": free_port(),
                "roles": ["data_owner", "output"],
                "data": "alice.safetensors",
            },
            {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": "model"},
        ],
        "model": {"program": "model"},
        "batch_size": batch,
        "randomness": "dealer",
        "dealer": {"host": "127.0.0.1", "port": free_port()},
        "fidelity": {"min_cosine": 0.999, "min_agreement": 1.0},
        "run_dir": "run",
    }
    (WORK / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"alice: {len(texts)} sentences tokenized locally, e.g. {texts[0]!r} -> {ids[0][:8].tolist()}...", flush=True)
    return launch_main(["launch", str(WORK / "config.yaml"), "--report", str(WORK / "report.json")])


def serve_model(out: Path, sign_key: Path | None, rows: int) -> int:
    """`make serve-text`'s model, made on first use: bob trains the classifier, packs it
    for every batch up to `rows` and every length up to SEQ tokens, with its tokenizer
    (public: clients tokenize on their own machines), calibrates it on sample sentences
    of its own, and signs it; the held-out sentences
    and their labels go beside it, one per line, for `smpc query --text ... --labels ...`."""
    import shutil

    import smpc
    from smpc import artifacts
    from smpc.model import model_dir as signing
    from smpc.model import owner

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    print("bob: training a BertForSequenceClassification on generated reviews (a few seconds)", flush=True)
    model, tokenizer = train(out)
    texts, labels = sentences(100, seed=1)  # the text demo's held-out sentences
    ids, mask = encode(tokenizer, texts)
    with torch.no_grad():
        plain = model(ids, attention_mask=mask).logits.argmax(-1)
    accuracy = float((plain == torch.tensor(labels)).double().mean())
    packed = out / "model"
    shutil.rmtree(packed, ignore_errors=True)
    print(f"bob: packing it for batches up to {rows} rows and sequences up to {SEQ} tokens", flush=True)
    smpc.pack(model, (ids[:rows],), packed, {"attention_mask": mask[:rows]}, tokenizer=out / "tokenizer.json")
    # calibrated on bob's own sample sentences: the ranges its approximations see, which
    # narrow the service's FSS comparisons (and bound its range checks)
    samples = out / "calibration-samples.safetensors"
    sample_ids, sample_mask = encode(tokenizer, sentences(200, seed=2)[0])
    artifacts.save_inputs(samples, {"input_ids": sample_ids, "attention_mask": sample_mask})
    owner.calibrate_directory(packed, samples)
    if sign_key is not None:
        signing.sign(packed, sign_key)
    (out / "heldout.txt").write_text("".join(t + "\n" for t in texts))
    (out / "heldout-labels.txt").write_text("".join(f"{y}\n" for y in labels))
    (out / "plaintext-accuracy.txt").write_text(f"{accuracy:.4f}\n")
    print(
        f"packed {packed} ({'signed, ' if sign_key else ''}plaintext accuracy on the held-out sentences: "
        f"{accuracy:.4f}); sentences in {out / 'heldout.txt'}, labels in {out / 'heldout-labels.txt'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="The text demo: a one-off run, or (--serve DIR) the model of `make serve-text`."
    )
    parser.add_argument("--serve", type=Path, metavar="DIR", help="train, pack and sign the served model into DIR")
    parser.add_argument("--sign-key", type=Path, help="with --serve: the model owner's private key")
    parser.add_argument(
        "--rows", type=int, default=16, help="with --serve: the most rows of a batch (serving.max_batch)"
    )
    args = parser.parse_args()
    sys.exit(serve_model(args.serve, args.sign_key, args.rows) if args.serve else main())
