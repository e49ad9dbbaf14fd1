"""smpc: secure multi-party inference of PyTorch models on CrypTen.

`import smpc` only defines: CrypTen is patched and imported when a module that computes
on shares is first imported (smpc.compat), and the entry points below are imported on
first use.

    smpc.simulate(model, inputs)   run a model on shares with real party processes
    smpc.pack(model, example, out) a model as a program directory to sign and serve
    smpc.Client(config, client=)   query a service
    smpc.load_config(path)         a run's configuration, validated
    smpc.SmpcError                 what every user-facing failure raises
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "Simulation", "SmpcError", "load_config", "pack", "simulate"]


def __getattr__(name: str) -> Any:
    # the entry points for a developer, imported on first use (they pull in torch, the
    # converter, the supervision of the party processes, or the HTTP client)
    if name in ("simulate", "Simulation"):
        from smpc.runs import simulate

        return getattr(simulate, name)
    if name == "pack":
        from smpc.model.pack import pack

        return pack
    if name == "Client":
        from smpc.serve.client import Client

        return Client
    if name == "load_config":
        from smpc.config import load_config

        return load_config
    if name == "SmpcError":
        from smpc.errors import SmpcError

        return SmpcError
    raise AttributeError(f"module 'smpc' has no attribute {name!r}")
