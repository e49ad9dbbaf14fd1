"""Small models, one per converter feature, with the tolerance each must meet on shares.

Tolerances are max |MPC - plaintext| at 16 fractional bits. Linear layers and data
movement are exact up to fixed-point rounding (1e-2 is loose); non-linear functions
go through CrypTen's approximations (exp, reciprocal, inverse square root).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LINEAR_TOL = 1e-2
APPROX_TOL = 2e-2


class Lambda(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class ConvBN(nn.Module):
    """Conv without bias then BatchNorm: folded into the convolution."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv, self.bn = conv(3, 4, 3, bias=False), bn(4)

    def forward(self, x):
        return self.bn(self.conv(x))


class StandaloneBN(nn.Module):
    """BatchNorm after a ReLU cannot be folded: runs as a per-channel affine map."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(torch.relu(x))


class LinearBN1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(6, 5), nn.BatchNorm1d(5)

    def forward(self, x):
        return self.bn(self.fc(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return x + self.fc(x)


class ElementwiseMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x):
        return self.a(x) * self.b(x)


class SecretMatmul(nn.Module):
    """matmul and bmm of two secret operands (as in attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        scores = torch.bmm(self.q(x), self.k(x).transpose(1, 2))
        return torch.matmul(scores, x)


class ShapeOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 12)

    def forward(self, x):  # x: (2, 3, 4)
        y = self.fc(x.flatten(1)).view(2, 3, 4).permute(0, 2, 1).transpose(1, 2)
        a, b = y.split(2, dim=2)
        z = torch.cat([b, a[:, 1:, :], a[:, :1, :]], dim=1)
        return z.reshape(2, -1)[:, ::2]


class MaskedAttention(nn.Module):
    """Attention with a causal boolean mask (scaled_dot_product_attention with attn_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        mask = torch.triu(torch.ones(x.size(1), x.size(1), dtype=torch.bool), 1)
        return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]


class CausalSDPA(nn.Module):
    def forward(self, x):
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)


class Scaled(nn.Module):
    """A function on inputs scaled far outside randn's range, as real checkpoints produce."""

    def __init__(self, fn: Callable, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.fn, self.scale, self.shift = fn, scale, shift

    def forward(self, x):
        return self.fn(x * self.scale + self.shift)


class SecretIndex(nn.Module):
    """Lookups at an index computed on shares (as RoBERTa's position ids): an embedding
    row and a gathered element chosen by a secret count of positive values."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(9, 3)

    def forward(self, x):
        count = (x > 0).long().cumsum(-1)  # 0..8, secret
        picked = torch.gather(x * 2.0, 1, count.clamp(max=7))
        return torch.cat([self.table(count).sum(-1), picked], dim=-1)


def _bn_stats(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


# name -> (model factory, input shape, tolerance)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], float]] = {
    "linear": (lambda: nn.Linear(8, 5), (4, 8), LINEAR_TOL),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), (2, 3, 12), LINEAR_TOL),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2), (2, 3, 9, 9), LINEAR_TOL),
    "conv2d_nobias": (lambda: nn.Conv2d(3, 2, (3, 2), bias=False), (2, 3, 6, 5), LINEAR_TOL),
    "batchnorm1d_folded": (lambda: _bn_stats(ConvBN(1)), (2, 3, 10), LINEAR_TOL),
    "batchnorm2d_folded": (lambda: _bn_stats(ConvBN(2)), (2, 3, 6, 6), LINEAR_TOL),
    "batchnorm1d_linear": (lambda: _bn_stats(LinearBN1d()), (4, 6), LINEAR_TOL),
    "batchnorm2d_standalone": (lambda: _bn_stats(StandaloneBN()), (2, 3, 5, 5), LINEAR_TOL),
    "relu": (nn.ReLU, (4, 8), LINEAR_TOL),
    "relu6": (nn.ReLU6, (4, 8), LINEAR_TOL),
    "hardtanh": (lambda: nn.Hardtanh(-0.5, 2.0), (4, 8), LINEAR_TOL),
    "sigmoid": (nn.Sigmoid, (4, 8), APPROX_TOL),
    "tanh": (nn.Tanh, (4, 8), APPROX_TOL),
    "gelu": (nn.GELU, (4, 8), APPROX_TOL),
    "silu": (nn.SiLU, (4, 8), APPROX_TOL),
    "softmax": (lambda: nn.Softmax(dim=-1), (4, 8), APPROX_TOL),
    "log_softmax": (lambda: nn.LogSoftmax(dim=1), (4, 8), APPROX_TOL),
    "layer_norm": (lambda: nn.LayerNorm(8), (4, 8), APPROX_TOL),
    "maxpool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 7), LINEAR_TOL),
    "avgpool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 7, 7), LINEAR_TOL),
    "adaptive_avgpool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 7, 8), LINEAR_TOL),
    "flatten": (nn.Flatten, (2, 3, 4), LINEAR_TOL),
    "shape_ops": (ShapeOps, (2, 3, 4), LINEAR_TOL),
    "dropout_identity": (lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Linear(8, 3)), (4, 8), LINEAR_TOL),
    "residual_add": (Residual, (4, 6), LINEAR_TOL),
    "elementwise_mul": (ElementwiseMul, (4, 6), LINEAR_TOL),
    "matmul_bmm": (SecretMatmul, (2, 3, 6), APPROX_TOL),
    "gelu_wide": (lambda: Scaled(nn.functional.gelu, 40.0), (4, 64), APPROX_TOL),
    "gelu_tanh_wide": (lambda: Scaled(lambda x: nn.functional.gelu(x, approximate="tanh"), 40.0), (4, 64), APPROX_TOL),
    "silu_wide": (lambda: Scaled(nn.functional.silu, 30.0), (4, 64), APPROX_TOL),
    "exp": (lambda: Scaled(torch.exp, 1.5, -2.0), (4, 8), 0.05),
    "rsqrt": (lambda: Scaled(lambda x: torch.rsqrt(x * x + 0.01), 10.0), (4, 8), APPROX_TOL),
    "divide_by_secret": (lambda: Scaled(lambda x: 1.0 / (x * x + 0.5), 3.0), (4, 8), APPROX_TOL),
    "rms_norm": (lambda: nn.RMSNorm(8, eps=1e-6), (4, 8), APPROX_TOL),
    "layer_norm_wide_variance": (lambda: Scaled(nn.LayerNorm(16), 300.0, 5.0), (4, 16), APPROX_TOL),
    "layer_norm_tiny_variance": (lambda: Scaled(nn.LayerNorm(16, eps=1e-12), 0.02, 1.0), (4, 16), APPROX_TOL),
    "compare_where": (
        lambda: Lambda(lambda x: (x > 0.3).float() * 0.5 + torch.where(x < 0, x, 0.25 * x)),
        (4, 8),
        LINEAR_TOL,
    ),
    "max_argmax": (lambda: Lambda(lambda x: x.max(dim=1).values + x.argmax(dim=1).float() * 0.5), (4, 8), LINEAR_TOL),
    "secret_index_lookup": (SecretIndex, (4, 8), LINEAR_TOL),
    "masked_attention": (MaskedAttention, (2, 5, 8), APPROX_TOL),
    "causal_sdpa": (CausalSDPA, (2, 2, 5, 4), APPROX_TOL),
    "transformer_encoder_layer": (
        lambda: nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True),
        (2, 5, 16),
        5e-2,
    ),
}


def make_case(name: str) -> tuple[nn.Module, torch.Tensor, float]:
    """The model (eval mode) and input for `name`, identical in every process."""
    factory, shape, tol = CASES[name]
    torch.manual_seed(sum(map(ord, name)))
    model = factory().eval()
    return model, torch.randn(shape), tol
