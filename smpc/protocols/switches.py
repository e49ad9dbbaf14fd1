"""The protocol switches: CrypTen's global settings (precision, provider, approximations),
the providers it may select, and which comparison and truncation protocols its tensors
run. Above the patches (smpc.compat), below the runtime that sets them."""

from __future__ import annotations

from typing import Any

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc import meter
from smpc.protocols import dcf, fss, millionaires


def configure(
    precision_bits: int,
    provider: str,
    functions: dict[str, Any] | None,
    comparisons: str = "circuits",
    truncation: str = "local",
) -> None:
    """Set CrypTen's global settings (precision, provider, approximations) and which
    comparison and truncation protocols run (`use_comparisons`)."""
    import crypten

    crypten.cfg.encoder.precision_bits = precision_bits
    crypten.cfg.mpc.provider = provider
    for key, value in (functions or {}).items():
        crypten.cfg.functions[key] = value
    use_comparisons(comparisons, truncation)


def register_provider(name: str, provider: Any) -> None:
    """Make `provider` selectable as crypten.cfg.mpc.provider = name.

    CrypTen keeps its providers in a fixed module-level table and looks the
    configured name up there at every request; the table has no public setter.
    """
    import crypten.mpc

    getattr(crypten.mpc, "__SUPPORTED_PROVIDERS")[name] = provider


# CrypTen's own methods that `use_comparisons("fss")` replaces: (class, name) -> the
# class's own attribute, or None where it inherits one (then deleting ours restores it)
_ORIGINALS: dict[tuple[Any, str], Any] = {}


def use_comparisons(mode: str, truncation: str = "local") -> None:
    """Run CrypTen's comparisons with its binary circuits ("circuits", upstream), with
    smpc's one-round FSS gates ("fss": [x < 0], ReLU, ==, max, argmax, max pooling and the
    two-party truncation after each fixed-point product; smpc.protocols.fss), or with
    the millionaires' protocol on OT material of two parties alone ("ot": [x < 0] and
    [x = 0], so ReLU, ==, max, argmax and max pooling; smpc.protocols.millionaires).

    `truncation` "dealer" (implied by "fss") puts the dealer-aided truncation in place of
    CrypTen's two-party one with circuits too; "local" keeps CrypTen's.

    CrypTen dispatches all of these through MPCTensor's methods and
    ArithmeticSharedTensor.div_, looked up at call time; both modes count the bytes and
    rounds of comparisons apart (the runtime's ProtocolMeter).
    """
    from crypten.mpc import MPCTensor
    from crypten.mpc.primitives import ArithmeticSharedTensor

    if mode not in ("circuits", "fss", "ot"):
        raise ValueError(f"unknown comparison protocol {mode!r}")
    if truncation not in ("local", "dealer"):
        raise ValueError(f"unknown truncation protocol {truncation!r}")
    names = ("_ltz", "_eqz_2PC", "relu", "eq", "max", "argmax", "max_pool2d")
    for name in names:
        _ORIGINALS.setdefault((MPCTensor, name), MPCTensor.__dict__.get(name))
    _ORIGINALS.setdefault((ArithmeticSharedTensor, "div_"), ArithmeticSharedTensor.__dict__["div_"])
    for (cls, name), original in _ORIGINALS.items():  # back to upstream
        if original is None:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, original)

    def metered(original: Any) -> Any:
        def comparison(self: Any, *args: Any, **kwargs: Any) -> Any:
            with meter.protocols().spent("comparisons", self.numel()):
                return original(self, *args, **kwargs)

        return comparison

    if mode == "circuits":
        for name in ("_ltz", "_eqz_2PC"):
            setattr(MPCTensor, name, metered(_ORIGINALS[(MPCTensor, name)]))
    elif mode == "ot":
        MPCTensor._ltz = millionaires.ltz  # metered inside (their B2A too)
        MPCTensor._eqz_2PC = millionaires.eqz
    else:
        dcf.warm()  # before any session: the compiled kernels' load is set-up, not online time
        MPCTensor._ltz = fss.ltz
        MPCTensor.relu = fss.relu
        MPCTensor.eq = fss.eq
        MPCTensor.max = fss.tensor_max
        MPCTensor.argmax = fss.tensor_argmax
        MPCTensor.max_pool2d = fss.tensor_max_pool2d
    if mode == "fss" or truncation == "dealer":
        ArithmeticSharedTensor.div_ = _dealer_div_(_ORIGINALS[(ArithmeticSharedTensor, "div_")])


def _dealer_div_(original: Any) -> Any:
    # CrypTen's two-party division by a public integer divides each share locally
    # (wrong by 2^64 / d with probability about |x| / 2^64); here it is the dealer-aided
    # truncation (smpc.protocols.fss.truncate). Other divisions (by fractions: a product
    # with the reciprocal) are CrypTen's own, whose truncation lands back here.
    def div_(self: Any, y: Any) -> Any:
        import torch

        if isinstance(y, float) and int(y) == y:
            y = int(y)
        if isinstance(y, torch.Tensor) and (not y.is_floating_point() or bool(y.frac().eq(0).all())):
            y = y.long()
        if isinstance(y, int) or (isinstance(y, torch.Tensor) and not y.is_floating_point()):
            self.share = fss.truncate(self.share, y)
            return self
        return original(self, y)

    return div_
