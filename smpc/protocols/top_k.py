"""Reveal only the best classes: the indices of the k largest logits, computed on shares.

An output party with `reveal: topK` learns the indices and nothing else of the logits.
Each round is a secure argmax (CrypTen's maximum by a tree of comparisons, which leaves
a one-hot share of the winner; the index is the one-hot's product with 0..C-1, exact),
then the winner is pushed below every other value by subtracting a public constant
times its one-hot, so the next round finds the next class. Ties go to one of the tied
classes (CrypTen's one-hot marks exactly one).
"""

from __future__ import annotations

from typing import Any

from smpc import compat, fixed_point  # noqa: F401  (compat first: it makes crypten importable on this torch)
import crypten
import torch


# below any logit the ring holds safely (|x| < 2^20 at 16 bits: smpc.model.ranges)
PUSH_DOWN = 2.0**19


def choice(reveal: str) -> int | None:
    """K of a `reveal: topK` setting; None for `logits`."""
    return None if reveal == "logits" else int(reveal[3:])


def reveal_kinds(config: Any) -> list[int]:
    """Every K that some output party of `config` learns, in order: each batch computes
    the top K of every one of them on the whole batch (so the dealer, which traces the
    same, prepares exactly that material), and each receiver is opened its own rows."""
    return sorted({k for k in (choice(p.reveal) for p in config.parties) if k is not None})


def check_supported(config: Any, program: Any) -> None:
    """ConfigError when an output party's `reveal: topK` does not fit the model's first
    output (it must be [batch, classes] with at least K classes)."""
    from smpc.errors import ConfigError

    name, shape = program.outputs[0]
    for i, party in enumerate(config.parties):
        k = choice(party.reveal)
        if k is not None and (len(shape) != 2 or shape[1] < k):
            raise ConfigError(
                f"{config.source}: parties[{i}].reveal: {party.reveal} needs a first output of shape [batch, classes] "
                f"with at least {k} classes; the model's {name} has shape {list(shape)}"
            )


def top_k(logits: Any, k: int) -> Any:
    """The indices (as fixed-point shares of integers) of the k largest values of each
    row of the secret [rows, classes] `logits`, best first: [rows, k]."""
    positions = torch.arange(logits.size(1), dtype=torch.float32)
    picked = []
    current = logits
    for round_ in range(k):
        _, onehot = current.max(dim=1, keepdim=True)
        onehot = fixed_point.to_fixed_point(onehot)
        picked.append((onehot * positions).sum(1, keepdim=True))
        if round_ + 1 < k:
            current = current - onehot * PUSH_DOWN
    return picked[0] if k == 1 else crypten.cat(picked, dim=1)
