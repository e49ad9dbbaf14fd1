"""Model architectures known to every party by name.

The config names an architecture; each party builds it locally, so only the model
owner's weights (never code) need to be provided, and only by the owner.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import nn

from smpc.errors import ConfigError


class DigitsCNN(nn.Module):
    """Small CNN for scikit-learn's 8x8 handwritten digits (1x8x8 -> 10 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (classic layout, ReLU and max pooling)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Two hidden layers over a flattened input (default 784 -> 128 -> 128 -> 10)."""

    def __init__(self, in_features: int = 784, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
    "mlp": MLP,
}


def build(architecture: str) -> nn.Module:
    """Instantiate an architecture by zoo name, or by ``package.module:factory`` path.

    The name comes from the party's own local config file, never from the network.
    """
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]()
    if ":" not in architecture:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(f"model.architecture: unknown architecture {architecture!r} (known: {known}, or 'module:factory')")
    module_name, _, attr = architecture.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model.architecture: cannot import {architecture!r}: {exc}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.architecture: {architecture!r} did not return a torch.nn.Module")
    return model
