"""smpc: secure multi-party inference of PyTorch models on CrypTen."""

import os as _os

# torch's C++ side logs every rendezvous retry and socket timeout to stderr; smpc
# reports those failures itself in one line. A user's own setting wins.
_os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from smpc import compat as _compat  # noqa: E402  (after the log level: it imports torch)

_compat.apply()


def __getattr__(name: str):
    # the entry points for a developer, imported on first use (they pull in the
    # converter, the launcher that supervises the party processes, or the HTTP client)
    if name == "pack":
        from smpc.model.pack import pack

        return pack
    if name == "simulate":
        from launch.simulate import simulate

        return simulate
    if name == "Client":
        from smpc.serve.client import Client

        return Client
    raise AttributeError(f"module 'smpc' has no attribute {name!r}")
