"""Small models that services in the tests serve by `module:factory` (the parties import
them from the project's root)."""

from __future__ import annotations

import torch
from torch import nn


def gelu_mlp() -> nn.Module:
    """4 -> 8 -> GELU -> 3: an approximated op (GELU) for the range checks to guard."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
