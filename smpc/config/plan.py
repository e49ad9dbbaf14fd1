"""The settings a config resolves to, each computed in one place under one name: what
the YAML leaves unset or implies (the truncation run, the transport), and what the
whole config says (its processes, whether it spans hosts). `Config.plan` is this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from smpc.config.schema import Config


@dataclass(frozen=True)
class Plan:
    # the two-party truncation run: protocol.truncation if set, else "dealer" wherever the
    # dealer can make it (two parties and randomness: dealer, a service as a one-off run;
    # always with comparisons: fss), else CrypTen's "local"
    truncation: Literal["local", "dealer"]
    # the parties' channels: transport if set, else tls across hosts and gloo on one
    transport: Literal["gloo", "tls"]
    multi_host: bool  # the parties (or the dealer) are not all on one host
    processes: tuple[str, ...]  # the dealer (when there is one), then the parties, by rank


def plan_of(config: Config) -> Plan:
    """The plan of `config` (also what the cross-field rules check against)."""
    protocol = config.protocol
    truncation: Literal["local", "dealer"]
    if protocol.truncation is not None:
        truncation = protocol.truncation
    elif protocol.comparisons == "fss":
        truncation = "dealer"
    else:
        truncation = "dealer" if config.randomness == "dealer" and len(config.parties) == 2 else "local"
    hosts = {p.host for p in config.parties} | ({config.dealer.host} if config.dealer else set())
    multi_host = len(hosts) > 1
    names = tuple(p.name for p in config.parties)
    return Plan(
        truncation=truncation,
        transport=config.transport or ("tls" if multi_host else "gloo"),
        multi_host=multi_host,
        processes=(("dealer",) if config.dealer is not None else ()) + names,
    )
