"""smpc: secure multi-party inference of PyTorch models on CrypTen."""

from smpc import compat as _compat

_compat.apply()
