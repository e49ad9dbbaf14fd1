"""Model architectures known to every party by name.

The config names an architecture; each party builds it locally, so only the model
owner's weights (never code) need to be provided, and only by the owner.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

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
        y: torch.Tensor = self.classifier(self.features(x))
        return y


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
        y: torch.Tensor = self.classifier(self.features(x))
        return y


class MLP(nn.Module):
    """Two hidden layers over a flattened input (default 784 -> 128 -> 128 -> 10)."""

    def __init__(self, in_features: int = 784, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.net(x)
        return y


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        y: torch.Tensor = self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))
        return y


class ResNet18(nn.Module):
    """ResNet-18 in its CIFAR layout (3x32x32 -> 10 logits): a 3x3 stem without max
    pooling, four stages of two basic blocks (64, 128, 256, 512 channels)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, in_channels = [], 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1)))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        y: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return y


class ResNetBlock(nn.Module):
    """One ResNet-18 basic block with a stem and a head, for 3x16x16 inputs: conv 3->32 with
    batch norm and ReLU, the block (two 3x3 convolutions, batch norm, the shortcut), global
    average pooling, linear to 10 logits. A full ResNet-18's every layer, at a size a
    study can repeat."""

    def __init__(self, channels: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.block = BasicBlock(channels, channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))
        return y


class TransformerEncoder(nn.Module):
    """A small transformer encoder classifier over already-embedded tokens
    (32 x 128 -> 10 logits): 2 pre-norm layers, 2 heads, feed-forward 256, GELU,
    mean pooling. Inputs are embeddings because a token lookup on secret ids is not
    an operation MPC does cheaply; the data owner embeds its own tokens."""

    def __init__(
        self, hidden: int = 128, heads: int = 2, layers: int = 2, seq: int = 32, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(seq, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x + self.position)
        y: torch.Tensor = self.head(self.norm(x).mean(dim=1))
        return y


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
    "mlp": MLP,
    "resnet18": ResNet18,
    "resnet_block": ResNetBlock,
    "transformer": TransformerEncoder,
}

# each zoo model's input, batch excluded (the transformer's is 32 tokens of width 128)
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "digits_cnn": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "mlp": (1, 28, 28),
    "resnet18": (3, 32, 32),
    "resnet_block": (3, 16, 16),
    "transformer": (32, 128),
}


def build(architecture: str) -> nn.Module:
    """Instantiate an architecture by zoo name, or by ``package.module:factory`` path.

    The name comes from the party's own local config file, never from the network.
    """
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]()
    if ":" not in architecture:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(
            f"model.architecture: unknown architecture {architecture!r} (known: {known}, or 'module:factory')"
        )
    module_name, _, attr = architecture.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model.architecture: cannot import {architecture!r}: {exc}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.architecture: {architecture!r} did not return a torch.nn.Module")
    return model
