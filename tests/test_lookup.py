"""Lookups at a secret index (smpc.protocols.lookup) on shares, at the edge values:
the first and last rows, indices carrying fixed-point rounding, indices off the table."""

from __future__ import annotations

import torch

from harness import run_parties

UNIT = 2.0**-16
N = 7
# index values as they reach a lookup; the row each must select (off the table: clamped)
INDICES = [0.0, 1.0, N - 1.0, 3.0 + UNIT, 3.0 - UNIT, 2.4, 2.6, -1.0, float(N), 40.0, -1000.0]
SELECTED = [0, 1, N - 1, 3, 3, 2, 3, 0, N - 1, N - 1, 0]


def _evaluate(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    import crypten

    from smpc.protocols import lookup

    g = torch.Generator().manual_seed(5)
    table = torch.randn(N, 4, generator=g)
    source = torch.randn(3, N, generator=g)
    index = torch.tensor(INDICES)
    secret_index = crypten.cryptensor(index, src=0)
    gather_index = torch.tensor([[0.0, N - 1.0], [2.0, 3.0 + UNIT], [-1.0, 9.0]])
    return {
        "one_hot": lookup.one_hot(secret_index, N).get_plain_text(),
        "rows": lookup.rows(crypten.cryptensor(table, src=1), secret_index).get_plain_text(),
        "rows_public_table": lookup.rows(table, secret_index).get_plain_text(),
        "gather": lookup.gather(
            crypten.cryptensor(source, src=1), 1, crypten.cryptensor(gather_index, src=0)
        ).get_plain_text(),
        "single_row": lookup.rows(table[:1], secret_index).get_plain_text(),
        "table": table,
        "source": source,
    }


def test_secret_index_lookups_select_exactly_at_edge_values():
    got = run_parties(_evaluate, 2, timeout=120)[0]
    selected = torch.tensor(SELECTED)
    assert torch.equal(got["one_hot"], torch.nn.functional.one_hot(selected, N).float())
    for name in ("rows", "rows_public_table"):
        torch.testing.assert_close(got[name], got["table"][selected], atol=2 * UNIT, rtol=0)
    want = torch.gather(got["source"], 1, torch.tensor([[0, N - 1], [2, 3], [0, N - 1]]))
    torch.testing.assert_close(got["gather"], want, atol=2 * UNIT, rtol=0)
    torch.testing.assert_close(got["single_row"], got["table"][:1].expand(len(INDICES), -1), atol=2 * UNIT, rtol=0)
