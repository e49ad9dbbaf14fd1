"""Your own Hugging Face model on secret shares, in one call.

Builds a small BERT from a config (random weights; a real checkpoint loads the same way
with `from_pretrained` on a local folder), runs it with `smpc.simulate`: two real party
processes and the trusted dealer on this machine, the weights shared by the model
owner, the token ids by the data owner. Prints how close the shares' answer is to
plain PyTorch's, and what it cost.

    python examples/simulate_hf_model.py
"""

import sys

import torch
from transformers import BertConfig, BertModel

import smpc


def main() -> int:
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            attn_implementation="eager",  # eager attention: the one that converts
        )
    ).eval()
    ids = torch.randint(1, 200, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0  # the second sentence is 5 tokens long, padded to 8

    # all rows form one batch; each party's phases are printed as they end (quiet=True: none)
    result = smpc.simulate(model, (ids, mask), parties=2, randomness="dealer")

    hidden = result.outputs.last_hidden_state  # what the data owner learns
    print(
        f"last_hidden_state {list(hidden.shape)}: worst cosine to plain PyTorch {result.cosine:.6f}, "
        f"max |error| {result.max_abs_error:.5f}"
    )
    print(
        f"online {result.online_s:.2f} s; per party: "
        + ", ".join(
            f"{name} {result.bytes_sent[name] / 2**20:.1f} MiB in {result.rounds[name]} rounds"
            for name in result.bytes_sent
        )
    )
    return 0 if result.cosine > 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
