"""Shape buckets: the shapes a program is converted for, so that one packed directory
serves every batch up to B rows and every sequence up to S tokens.

A converted program has fixed shapes (CrypTen runs on tensors of known sizes), so a
packed directory holds one program per bucket: rows 1, 2, 4, ... up to B (and B), times
sequence lengths from 8, doubling, up to S (and S). A batch is padded to the smallest
bucket that holds it: its rows with rows of zeros, its sequences with masked positions,
neither of which changes an answer (rows are independent; a masked position is not
attended to). So the cost of a query follows its size, within a factor of two, from a
bounded number of programs (log B x log S).
"""

from __future__ import annotations

from dataclasses import dataclass

SHORTEST_SEQ = 8  # the smallest sequence bucket: shorter ones would save little, cost a program each


@dataclass(frozen=True, order=True)
class Bucket:
    """A program's shape: `rows` in the batch and, for sequence models, `seq` tokens per
    row (0 when the program has no sequence dimension)."""

    rows: int
    seq: int = 0

    @property
    def label(self) -> str:
        """How the bucket is named in messages and labels: `4 rows` or `4 rows x 16 tokens`."""
        return f"{self.rows} rows" + (f" x {self.seq} tokens" if self.seq else "")

    @property
    def folder(self) -> str:
        """The folder of its program inside a packed directory (relative)."""
        return f"buckets/r{self.rows}" + (f"-s{self.seq}" if self.seq else "")


def sizes(limit: int, smallest: int = 1) -> tuple[int, ...]:
    """`smallest`, doubling, below `limit`, then `limit` itself."""
    out, n = [], min(smallest, limit)
    while n < limit:
        out.append(n)
        n *= 2
    return (*out, limit)


def grid(rows: int, seq: int = 0) -> tuple[Bucket, ...]:
    """Every bucket of a directory packed for `rows` rows and `seq` tokens (0: none)."""
    seqs = sizes(seq, SHORTEST_SEQ) if seq else (0,)
    return tuple(Bucket(r, s) for r in sizes(rows) for s in seqs)


def smallest_holding(buckets: tuple[Bucket, ...], rows: int, seq: int = 0) -> Bucket | None:
    """The smallest bucket with at least `rows` rows and `seq` tokens (None: none holds it)."""
    fitting = [b for b in buckets if b.rows >= rows and b.seq >= seq]
    return min(fitting, key=lambda b: (b.rows * max(b.seq, 1), b.rows)) if fitting else None
