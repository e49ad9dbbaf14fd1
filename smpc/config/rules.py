"""The cross-field rules of a config, one named function each (a rule is found by its
name): each returns the problems it finds, one line each, naming the key. `problems`
runs them all, in this order, so that every problem is reported at once."""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Callable

from smpc.config.plan import Plan, plan_of

if TYPE_CHECKING:
    from smpc.config.schema import Config


def unique_names(config: Config, plan: Plan) -> list[str]:
    names = [p.name for p in config.parties]
    return [
        f"parties: party name {n!r} is used more than once" for n in sorted({n for n in names if names.count(n) > 1})
    ]


def unique_addresses(config: Config, plan: Plan) -> list[str]:
    addresses = [(p.host, p.port) for p in config.parties]
    return [
        f"parties: address {host}:{port} is used by more than one party"
        for host, port in sorted({a for a in addresses if addresses.count(a) > 1})
    ]


def serving_api_ports(config: Config, plan: Plan) -> list[str]:
    """With serving: every party has a client API port of its own, and no data or output role."""
    if config.serving is None:
        return []
    problems = []
    taken = [(q.host, q.port) for q in config.parties] + (
        [(config.dealer.host, config.dealer.port)] if config.dealer else []
    )
    for i, p in enumerate(config.parties):
        if p.api_port is None:
            problems.append(f"parties[{i}].api_port: required with serving (the port of {p.name}'s client API)")
        elif (p.host, p.api_port) in taken:
            problems.append(f"parties[{i}].api_port: {p.host}:{p.api_port} is also a party's or the dealer's port")
        for role in ("data_owner", "output"):
            if role in p.roles:
                problems.append(
                    f"parties[{i}].roles: {role} is not used with serving (the clients own the inputs and receive the outputs)"
                )
    apis = [(p.host, p.api_port) for p in config.parties if p.api_port is not None]
    for host, port in sorted({a for a in apis if apis.count(a) > 1}):
        problems.append(f"parties: api address {host}:{port} is used by more than one party")
    return problems


def serving_needs_tls(config: Config, plan: Plan) -> list[str]:
    if config.serving is None or plan.transport == "tls":
        return []
    return ["transport: serving needs tls (clients authenticate with certificates from the consortium CA)"]


def serving_shares_the_model_once(config: Config, plan: Plan) -> list[str]:
    if config.serving is None or not config.share_cache:
        return []
    return ["share_cache: not used with serving (the model is shared once, at start)"]


def owners_and_their_files(config: Config, plan: Plan) -> list[str]:
    """One model owner with the weights; data owners (unless serving) with their data; no one else with either."""
    problems = []
    for role, key, label in (("model_owner", "weights", "model owner"), ("data_owner", "data", "data owner")):
        owners = [i for i, p in enumerate(config.parties) if role in p.roles]
        if role == "model_owner" and len(owners) != 1:
            problems.append(f"parties: expected exactly one party with role {role}, found {len(owners)}")
        if role == "data_owner" and not owners and config.serving is None:
            problems.append("parties: expected at least one party with role data_owner, found 0")
        for i, p in enumerate(config.parties):
            has = getattr(p, key) is not None
            if i in owners and not has:
                problems.append(f"parties[{i}].{key}: required for the {label}")
            if i not in owners and has:
                problems.append(f"parties[{i}].{key}: only the {label} may provide {key}")
    return problems


def reveal_only_to_outputs(config: Config, plan: Plan) -> list[str]:
    return [
        f"parties[{i}].reveal: only for a party with role output"
        for i, p in enumerate(config.parties)
        if p.reveal != "logits" and "output" not in p.roles
    ]


def every_output_has_a_receiver(config: Config, plan: Plan) -> list[str]:
    """A one-off run reveals to someone, and every data owner's outputs to someone."""
    if config.serving is not None:  # the clients own the inputs and receive the outputs
        return []
    if not any("output" in p.roles for p in config.parties):
        return ["parties: expected at least one party with role output"]
    overseers = [p for p in config.parties if "output" in p.roles and "data_owner" not in p.roles]
    return [
        f"parties[{i}].roles: the outputs of data owner {p.name!r} would be revealed to nobody "
        "(give it role output, or add an output party that owns no data)"
        for i, p in enumerate(config.parties)
        if "data_owner" in p.roles and "output" not in p.roles and not overseers
    ]


def dealer_when_asked_for(config: Config, plan: Plan) -> list[str]:
    return (
        ["dealer: required when randomness is 'dealer'"]
        if config.randomness == "dealer" and config.dealer is None
        else []
    )


def fss_needs_the_dealer_and_two_parties(config: Config, plan: Plan) -> list[str]:
    if config.protocol.comparisons != "fss":
        return []
    problems = []
    if config.randomness != "dealer":
        problems.append("protocol.comparisons: fss needs randomness: dealer (the dealer makes the comparison keys)")
    if len(config.parties) != 2:
        problems.append(
            f"protocol.comparisons: fss needs exactly 2 parties (its keys are two-party function secret "
            f"sharing), got {len(config.parties)}; use circuits"
        )
    return problems


def ot_comparisons_need_two_parties_alone(config: Config, plan: Plan) -> list[str]:
    if config.protocol.comparisons != "ot" or config.randomness == "two-party":
        return []
    return [
        "protocol.comparisons: ot needs randomness: two-party (its material is the two parties' oblivious "
        f"transfers), got randomness: {config.randomness}; use circuits"
    ]


def dealer_truncation_needs_the_dealer_and_two_parties(config: Config, plan: Plan) -> list[str]:
    if config.protocol.truncation != "dealer":
        return []
    problems = []
    if config.randomness != "dealer":
        problems.append("protocol.truncation: dealer needs randomness: dealer (the dealer makes the masks)")
    if len(config.parties) != 2:
        problems.append(
            f"protocol.truncation: dealer is for exactly 2 parties, got {len(config.parties)} "
            "(with more, CrypTen's truncation is already exact to one unit); leave it unset"
        )
    return problems


def fss_truncates_with_the_dealer(config: Config, plan: Plan) -> list[str]:
    if config.protocol.truncation == "local" and config.protocol.comparisons == "fss":
        return [
            "protocol.truncation: local cannot go with comparisons: fss (its truncation is the dealer's); leave it unset"
        ]
    return []


def two_party_is_two_parties_alone(config: Config, plan: Plan) -> list[str]:
    if config.randomness != "two-party":
        return []
    problems = []
    if len(config.parties) != 2:
        problems.append(
            f"randomness: two-party is for exactly 2 parties (no dealer), got {len(config.parties)}; "
            "use randomness: dealer"
        )
    if config.serving is not None:
        problems.append(
            "serving: not yet with randomness: two-party (a service's material is the dealer's); use dealer"
        )
    return problems


def dealer_only_when_asked_for(config: Config, plan: Plan) -> list[str]:
    problems = []
    if config.randomness != "dealer" and config.dealer is not None:
        problems.append("dealer: only allowed when randomness is 'dealer'")
    addresses = [(p.host, p.port) for p in config.parties]
    if config.dealer is not None and (config.dealer.host, config.dealer.port) in addresses:
        problems.append(f"dealer: address {config.dealer.host}:{config.dealer.port} is also a party's address")
    return problems


def share_cache_is_sealed(config: Config, plan: Plan) -> list[str]:
    if not config.share_cache:
        return []
    return [
        f"parties[{i}].storage_key: required when share_cache is true (the shares are sealed)"
        for i, p in enumerate(config.parties)
        if p.storage_key is None
    ]


def tls_has_its_keys(config: Config, plan: Plan) -> list[str]:
    if plan.transport == "tls" and config.tls is None:
        return ["tls: required for transport tls (the consortium CA and certificates; see `smpc keys`)"]
    return []


def api_ports_only_when_serving(config: Config, plan: Plan) -> list[str]:
    if config.serving is not None:
        return []
    return [
        f"parties[{i}].api_port: only used with a serving section"
        for i, p in enumerate(config.parties)
        if p.api_port is not None
    ]


RULES: tuple[Callable[[Config, Plan], list[str]], ...] = (
    unique_names,
    unique_addresses,
    serving_api_ports,
    serving_needs_tls,
    serving_shares_the_model_once,
    owners_and_their_files,
    reveal_only_to_outputs,
    every_output_has_a_receiver,
    dealer_when_asked_for,
    fss_needs_the_dealer_and_two_parties,
    dealer_truncation_needs_the_dealer_and_two_parties,
    fss_truncates_with_the_dealer,
    two_party_is_two_parties_alone,
    ot_comparisons_need_two_parties_alone,
    dealer_only_when_asked_for,
    share_cache_is_sealed,
    tls_has_its_keys,
    api_ports_only_when_serving,
)


def problems(config: Config) -> list[str]:
    """Every problem the rules find in `config`, in the rules' order."""
    plan = plan_of(config)
    return [line for rule in RULES for line in rule(config, plan)]
