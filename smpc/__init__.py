"""smpc: secure multi-party inference of PyTorch models on CrypTen."""

import os as _os

# torch's C++ side logs every rendezvous retry and socket timeout to stderr; smpc
# reports those failures itself in one line. A user's own setting wins.
_os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from smpc import compat as _compat  # noqa: E402  (after the log level: it imports torch)

_compat.apply()
