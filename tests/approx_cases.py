"""Input sweeps for every approximation of smpc.protocols.approx: the whole range each
is meant to cover, with its edge values, and the exact function to compare with."""

from __future__ import annotations


import math

import torch


def _sweep(low: float, high: float, n: int = 4001, extra: tuple[float, ...] = ()) -> torch.Tensor:
    return torch.cat([torch.linspace(low, high, n), torch.tensor(extra, dtype=torch.float32)])


def _log_sweep(low_exp: float, high_exp: float, n: int = 2001) -> torch.Tensor:
    return torch.logspace(low_exp, high_exp, n)


# name -> (input builder, exact function, what is measured, tolerance, range shown in docs/explanation/models.md)
# Errors are absolute, except "relative": |mpc - exact| / max(|exact|, 0.01) (below 0.01
# fixed point has too few units for a relative figure). The exact function is applied to
# the input as encoded (rounded to 2^-16), so that the input's own rounding is not counted.
SWEEPS = {
    "gelu (erf)": (
        lambda: _sweep(-1000, 1000, 8001, (0.0, 2**-16, -(2**-16), 4.5, -4.5, 2.0, -2.0)),
        lambda x: torch.nn.functional.gelu(x.double()),
        "absolute",
        1e-3,
        "[-1000, 1000]",
    ),
    "gelu (tanh)": (
        lambda: _sweep(-1000, 1000, 8001, (0.0, 4.5, -4.5, 2.0, -2.0)),
        lambda x: torch.nn.functional.gelu(x.double(), approximate="tanh"),
        "absolute",
        1e-3,
        "[-1000, 1000]",
    ),
    "gelu near 0": (
        lambda: _sweep(-6, 6, 4001),
        lambda x: torch.nn.functional.gelu(x.double()),
        "absolute",
        2e-4,
        "[-6, 6]",
    ),
    "silu": (
        lambda: _sweep(-1000, 1000, 8001, (0.0, 3.0, 7.0, 16.0, -16.0)),
        lambda x: torch.nn.functional.silu(x.double()),
        "absolute",
        1e-3,
        "[-1000, 1000]",
    ),
    "tanh": (
        lambda: _sweep(-1000, 1000, 8001, (0.0, 1.5, -1.5, 4.0, 9.0, -9.0)),
        lambda x: torch.tanh(x.double()),
        "absolute",
        5e-4,
        "[-1000, 1000]",
    ),
    "sigmoid": (
        lambda: _sweep(-1000, 1000, 8001, (0.0, 18.0, -18.0)),
        lambda x: torch.sigmoid(x.double()),
        "absolute",
        5e-4,
        "[-1000, 1000]",
    ),
    "exp": (
        lambda: _sweep(-1000, 12, 8001, (-16.0, 0.0, 12.0)),
        lambda x: torch.exp(x.double()),
        "relative",
        3e-3,
        "[-1000, 12]",
    ),
    "reciprocal": (
        lambda: torch.cat([_log_sweep(-4, 7), -_log_sweep(-4, 7)]),
        lambda x: 1 / x.double(),
        "relative",
        2e-3,
        "±[1e-4, 1e7]",
    ),
    "inv_sqrt": (lambda: _log_sweep(-4, 7), lambda x: x.double().rsqrt(), "relative", 2e-3, "[1e-4, 1e7]"),
    "sqrt": (lambda: _log_sweep(-4, 7), lambda x: x.double().sqrt(), "relative", 2e-3, "[1e-4, 1e7]"),
}


def layer_norm_rows() -> torch.Tensor:
    """Rows of width 64 whose variances run from 1e-4 to 1e6, with a non-zero mean."""
    torch.manual_seed(0)
    stds = torch.logspace(-2, 3, 61)
    rows = torch.randn(61, 64) * stds[:, None] + torch.linspace(-50, 50, 61)[:, None]
    return rows


def small_variance_rows() -> torch.Tensor:
    """Rows of width 64 with standard deviations from 2e-3 to 1e-2 (variances 4e-6 ..
    1e-4: below 2^-14, where a variance of truncated squares loses its bits)."""
    torch.manual_seed(2)
    stds = torch.logspace(math.log10(2e-3), -2, 16)
    return torch.randn(16, 64) * stds[:, None] + torch.linspace(-5, 5, 16)[:, None]


def softmax_rows() -> torch.Tensor:
    """Score rows as attention sees them: small, large, long-tailed, and masked with -1e4."""
    torch.manual_seed(1)
    rows = [torch.randn(8, 16) * s for s in (0.1, 1.0, 5.0, 20.0)]
    masked = torch.randn(8, 16) * 3
    masked[:, 10:] = -1e4
    rows.append(masked)
    return torch.cat(rows)
