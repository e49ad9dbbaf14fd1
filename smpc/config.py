"""The run configuration: one typed, frozen schema, validated once on load.

Every problem is reported at once, one line each, naming the file and the key path:
``configs/x.yaml: parties[1].port: expected an integer 1..65535, got 'abc'``.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args, overload

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from smpc.errors import ConfigError

Role = Literal["model_owner", "data_owner", "output"]
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TOP_K = re.compile(r"top[1-9][0-9]{0,2}")
MAX_YAML_BYTES = 1 << 20  # a config (or study) file larger than this is refused before parsing
MAX_ALIASES = 32
MAX_SAMPLE_VALUES = 1 << 24  # values in one sample (model.input_shape)
_Model = TypeVar("_Model", bound=BaseModel)  # the schema validate_document reads


def valid_name(name: str) -> bool:
    """A party, client or model name: lower-case letters, digits, '-', '_' (it names files)."""
    return bool(_NAME.match(name))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PartyConfig(_Section):
    """One organization's process. Order in the file is the party's rank."""

    name: str  # lower-case letters, digits, '-', '_' ("dealer" is reserved); its certificate's name
    host: str  # where the party listens (an address or a host name)
    port: StrictInt = Field(ge=1, le=65535)  # the parties' channel; the first party's is the rendezvous
    roles: tuple[Role, ...] = ()  # none: a helper that only computes on shares
    weights: Path | None = None  # model owner only: safetensors file of the weights
    data: Path | None = None  # data owner only: safetensors file with `inputs` (and `labels`)
    # AES-256 key (32 bytes, mode 0600) that seals what this party keeps on disk
    storage_key: Path | None = None
    # serving only: the HTTPS port of this party's client API (Open Inference Protocol v2)
    api_port: StrictInt | None = Field(default=None, ge=1, le=65535)
    # output parties: what they learn of the first output: "logits" (all of it), or "topK"
    # (the K best classes' indices only; the values never leave the shares)
    reveal: StrictStr = "logits"

    @field_validator("reveal")
    @classmethod
    def _reveal_ok(cls, v: str) -> str:
        if v != "logits" and not (_TOP_K.fullmatch(v) and 1 <= int(v[3:]) <= 100):
            raise ValueError(f"expected 'logits' or 'topK' with K 1..100 (e.g. 'top1', 'top5'), got {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected a lower-case name (letters, digits, '-', '_'), got {v!r}")
        if v == "dealer":
            raise ValueError("'dealer' is reserved for the dealer process")
        return v

    @field_validator("roles")
    @classmethod
    def _roles_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"roles are listed twice: {list(v)}")
        return v


class ModelConfig(_Section):
    """The computation every party builds; the weights come from the model owner.

    Either `architecture` (a zoo name or ``module:factory``, built by every party, with
    `input_shape`) or `program` (a packed model directory: the converted graph as data,
    so no party needs the model's code)."""

    architecture: str | None = None  # a zoo name (smpc.model.zoo) or "package.module:factory"
    # one sample's shape, without the batch dimension (with architecture only)
    input_shape: tuple[StrictInt, ...] | None = Field(default=None, min_length=1)
    program: Path | None = None  # a packed model directory (smpc model pack, smpc.pack)
    # the model owner's signing public key: its weights must then be a model directory
    # signed with the matching private key (smpc model pack + sign), checked before loading
    public_key: Path | None = None

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(d < 1 for d in v):
            raise ValueError(f"expected positive dimensions, got {list(v)}")
        if v is not None and (len(v) > 8 or math.prod(v) > MAX_SAMPLE_VALUES):
            # bounded before anything is allocated (a batch of zeros is built from it)
            raise ValueError(f"expected at most 8 dimensions and {MAX_SAMPLE_VALUES} values per sample, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.architecture is None) == (self.program is None):
            raise ValueError("expected exactly one of architecture or program (a packed model directory)")
        if self.architecture is not None and self.input_shape is None:
            raise ValueError("input_shape is required with architecture")
        if self.program is not None and self.input_shape is not None:
            raise ValueError("input_shape is not allowed with program (the program holds its input shapes)")
        return self


class FidelityConfig(_Section):
    """Where plaintext can be compared (the launcher, smpc.simulate), the least fidelity
    a run must reach; below it the run fails naming the output, the figure and the
    likely op. null switches a check off."""

    min_cosine: StrictFloat | None = Field(
        allow_inf_nan=False, default=0.99, ge=-1.0, le=1.0
    )  # every output row (token) not masked
    max_abs_error: StrictFloat | None = Field(allow_inf_nan=False, default=None, gt=0)  # over every output element
    min_agreement: StrictFloat | None = Field(
        allow_inf_nan=False, default=None, ge=0.0, le=1.0
    )  # top-1 of the first output


class FunctionsConfig(_Section):
    """CrypTen's approximation settings (crypten.cfg.functions); defaults are CrypTen's."""

    # Only max_method and the log_* settings still reach a converted model: smpc's own
    # exp, reciprocal, square roots, sigmoid and tanh (smpc.protocols.approx) replace
    # CrypTen's, so the other settings apply to CrypTen's functions called directly.
    max_method: Literal["log_reduction", "double_log_reduction", "accelerated_cascade"] = (
        "log_reduction"  # max, max pooling
    )
    exp_iterations: StrictInt = Field(default=8, ge=1, le=32)  # CrypTen's exp only
    reciprocal_method: Literal["NR", "log"] = "NR"  # CrypTen's reciprocal only
    reciprocal_nr_iters: StrictInt = Field(default=10, ge=1, le=64)  # CrypTen's reciprocal only
    reciprocal_log_iters: StrictInt = Field(default=1, ge=1, le=64)  # CrypTen's reciprocal only
    reciprocal_all_pos: StrictBool = False  # CrypTen's reciprocal only
    sqrt_nr_iters: StrictInt = Field(default=3, ge=1, le=64)  # CrypTen's square root only
    sigmoid_tanh_method: Literal["reciprocal", "chebyshev"] = "reciprocal"  # CrypTen's sigmoid and tanh only
    sigmoid_tanh_terms: StrictInt = Field(default=32, ge=2, le=128)  # CrypTen's sigmoid and tanh only
    log_iterations: StrictInt = Field(default=2, ge=1, le=64)  # log
    log_exp_iterations: StrictInt = Field(default=8, ge=1, le=64)  # log
    log_order: StrictInt = Field(default=8, ge=1, le=64)  # log


class ProtocolConfig(_Section):
    """How the parties compute: fixed point, approximations, comparisons, truncation."""

    precision_bits: StrictInt = Field(default=16, ge=8, le=24)  # fixed-point fractional bits
    functions: FunctionsConfig = FunctionsConfig()  # CrypTen's approximation settings
    # open one bit per tensor an approximation reads: is it inside the covered range?
    range_checks: StrictBool = False
    # circuits: CrypTen's binary adder circuits; fss: one-round comparisons and
    # truncation from the dealer's function-secret-sharing keys (smpc.protocols.fss)
    comparisons: Literal["circuits", "fss"] = "circuits"
    # the truncation after every fixed-point product, two parties: "dealer" (one opening
    # of x + r with the dealer's r; never wraps) or "local" (CrypTen's: each party divides
    # its share; wrong by 2^64/d with probability about |x|/2^64). Unset: the dealer's wherever
    # it can make it (Config.truncation)
    truncation: Literal["local", "dealer"] | None = None


class DealerConfig(_Section):
    """Address of the trusted dealer process (randomness: dealer)."""

    host: str  # the dealer's host (a third host in a real deployment)
    port: StrictInt = Field(ge=1, le=65535)  # where the parties check in and read their material
    # material prepared before the online phase starts, at most this much (party 0
    # holds it in memory); later batches are generated while the parties compute
    prefetch_mib: StrictInt = Field(default=1024, ge=1)


class TlsConfig(_Section):
    """Consortium keys for transport: tls. Party X presents `certs`/X.pem with its
    private key `certs`/X.key (only X's own key needs to exist on X's host). `crl`, when
    given, is the CA's revocation list (`smpc keys revoke`): a revoked peer is refused."""

    ca: Path  # the consortium CA's certificate: the only issuer trusted
    certs: Path  # the folder of NAME.pem (and this host's own NAME.key)
    crl: Path | None = None  # the CA's revocation list


class TimeoutConfig(_Section):
    connect_s: StrictFloat = Field(
        allow_inf_nan=False, default=60.0, gt=0
    )  # every party (and the dealer) must have joined by then
    op_s: StrictFloat = Field(
        allow_inf_nan=False, default=30.0, gt=0
    )  # bound on any single communication step: a vanished peer is noticed by then
    run_s: StrictFloat = Field(allow_inf_nan=False, default=1800.0, gt=0)  # bound on the whole run (launcher)


class ServingConfig(_Section):
    """Standing parties that answer authenticated clients (`smpc serve`). The clients
    secret-share their own inputs and reconstruct the outputs: no party sees either."""

    model_name: str = "model"  # the model's name in the client API: /v2/models/{model_name}
    clients: tuple[str, ...] = Field(min_length=1)  # certificate names allowed to query it
    max_batch: StrictInt = Field(default=16, ge=1, le=1024)  # most rows in one secret batch
    max_wait_ms: StrictFloat = Field(
        allow_inf_nan=False, default=5.0, ge=0, le=10_000
    )  # how long a batch waits to fill
    pool: StrictInt = Field(default=2, ge=1, le=64)  # dealer batches kept ready per batch size
    # a query the leader proposes must reach every party within this time, else it fails
    arrival_s: StrictFloat = Field(allow_inf_nan=False, default=5.0, gt=0, le=600)
    # the longest a query waits for its answer (504 after it); a query that reached only
    # some parties is forgotten there by then
    query_timeout_s: StrictFloat = Field(allow_inf_nan=False, default=30.0, gt=0, le=3600)
    # when a party or the dealer is gone: exit non-zero, or wait for it and join again
    on_peer_loss: Literal["exit", "rejoin"] = "exit"
    # text clients (Client.infer_text, smpc query --text): cut a sentence longer than the
    # longest length served to that length, instead of refusing it
    truncate_text: StrictBool = False

    @field_validator("model_name")
    @classmethod
    def _model_name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"expected a lower-case name (letters, digits, '-', '_'), got {v!r}")
        return v

    @field_validator("clients")
    @classmethod
    def _clients_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"expected lower-case client names (letters, digits, '-', '_'), got {name!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"clients are listed twice: {list(v)}")
        return v

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The secret batch sizes a service runs: powers of two up to max_batch, and max_batch."""
        from smpc.model.buckets import sizes

        return sizes(self.max_batch)


class Config(_Section):
    """A whole run: parties, model, inference settings."""

    version: Literal[1] = 1  # the config format's version
    parties: tuple[PartyConfig, ...]  # at least 2; the order is the rank
    model: ModelConfig  # what every party builds
    batch_size: StrictInt = Field(default=64, ge=1, le=1 << 16)  # bounded before anything is allocated
    # dealer: a trusted dealer process; local: CrypTen's TFP, INSECURE, simulation only
    randomness: Literal["local", "dealer"] = "local"
    dealer: DealerConfig | None = None  # required with randomness: dealer, refused otherwise
    # gloo: plaintext, for one trusted host; tls: mutually authenticated TLS 1.3.
    # Unset: tls when the parties are on different hosts, else gloo.
    transport: Literal["gloo", "tls"] | None = None
    tls: TlsConfig | None = None  # the consortium's keys (transport: tls)
    protocol: ProtocolConfig = ProtocolConfig()  # how the parties compute
    fidelity: FidelityConfig = FidelityConfig()  # the least fidelity to plaintext a launcher run must reach
    timeouts: TimeoutConfig = TimeoutConfig()  # bounds on every wait
    run_dir: Path = Path("runs")  # logs, audit logs, results and revealed outputs
    # keep each party's shares of the model sealed in run_dir and reuse them next run
    share_cache: StrictBool = False
    serving: ServingConfig | None = None  # standing parties answering clients (smpc serve)
    source: Path = Field(default=Path("<memory>"), exclude=True)

    @field_validator("parties")
    @classmethod
    def _at_least_two(cls, v: tuple[PartyConfig, ...]) -> tuple[PartyConfig, ...]:
        if len(v) < 2:
            raise ValueError(f"expected at least 2 parties, got {len(v)}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = []
        names = [p.name for p in self.parties]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"parties: party name {name!r} is used more than once")
        addresses = [(p.host, p.port) for p in self.parties]
        for host, port in sorted({a for a in addresses if addresses.count(a) > 1}):
            problems.append(f"parties: address {host}:{port} is used by more than one party")
        if self.serving is not None:
            problems += self._serving_checks()
        for role, key, label in (("model_owner", "weights", "model owner"), ("data_owner", "data", "data owner")):
            owners = [i for i, p in enumerate(self.parties) if role in p.roles]
            if role == "model_owner" and len(owners) != 1:
                problems.append(f"parties: expected exactly one party with role {role}, found {len(owners)}")
            if role == "data_owner" and not owners and self.serving is None:
                problems.append("parties: expected at least one party with role data_owner, found 0")
            for i, p in enumerate(self.parties):
                has = getattr(p, key) is not None
                if i in owners and not has:
                    problems.append(f"parties[{i}].{key}: required for the {label}")
                if i not in owners and has:
                    problems.append(f"parties[{i}].{key}: only the {label} may provide {key}")
        for i, p in enumerate(self.parties):
            if p.reveal != "logits" and "output" not in p.roles:
                problems.append(f"parties[{i}].reveal: only for a party with role output")
        if self.serving is not None:
            pass  # the clients own the inputs and receive the outputs
        elif not any("output" in p.roles for p in self.parties):
            problems.append("parties: expected at least one party with role output")
        else:
            overseers = [p for p in self.parties if "output" in p.roles and "data_owner" not in p.roles]
            for i, p in enumerate(self.parties):
                if "data_owner" in p.roles and "output" not in p.roles and not overseers:
                    problems.append(
                        f"parties[{i}].roles: the outputs of data owner {p.name!r} would be revealed to nobody "
                        "(give it role output, or add an output party that owns no data)"
                    )
        if self.randomness == "dealer" and self.dealer is None:
            problems.append("dealer: required when randomness is 'dealer'")
        if self.protocol.comparisons == "fss":
            if self.randomness != "dealer":
                problems.append(
                    "protocol.comparisons: fss needs randomness: dealer (the dealer makes the comparison keys)"
                )
            if len(self.parties) != 2:
                problems.append(
                    f"protocol.comparisons: fss needs exactly 2 parties (its keys are two-party function secret "
                    f"sharing), got {len(self.parties)}; use circuits"
                )
        if self.protocol.truncation == "dealer":
            if self.randomness != "dealer":
                problems.append("protocol.truncation: dealer needs randomness: dealer (the dealer makes the masks)")
            if len(self.parties) != 2:
                problems.append(
                    f"protocol.truncation: dealer is for exactly 2 parties, got {len(self.parties)} "
                    "(with more, CrypTen's truncation is already exact to one unit); leave it unset"
                )
        if self.protocol.truncation == "local" and self.protocol.comparisons == "fss":
            problems.append(
                "protocol.truncation: local cannot go with comparisons: fss (its truncation is the dealer's); leave it unset"
            )
        if self.randomness == "local" and self.dealer is not None:
            problems.append("dealer: only allowed when randomness is 'dealer'")
        if self.dealer is not None and (self.dealer.host, self.dealer.port) in addresses:
            problems.append(f"dealer: address {self.dealer.host}:{self.dealer.port} is also a party's address")
        if self.share_cache:
            for i, p in enumerate(self.parties):
                if p.storage_key is None:
                    problems.append(
                        f"parties[{i}].storage_key: required when share_cache is true (the shares are sealed)"
                    )
        if self.effective_transport == "tls" and self.tls is None:
            problems.append("tls: required for transport tls (the consortium CA and certificates; see `smpc keys`)")
        if self.serving is None:
            for i, p in enumerate(self.parties):
                if p.api_port is not None:
                    problems.append(f"parties[{i}].api_port: only used with a serving section")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _serving_checks(self) -> list[str]:
        problems = []
        for i, p in enumerate(self.parties):
            if p.api_port is None:
                problems.append(f"parties[{i}].api_port: required with serving (the port of {p.name}'s client API)")
            elif (p.host, p.api_port) in [(q.host, q.port) for q in self.parties] + (
                [(self.dealer.host, self.dealer.port)] if self.dealer else []
            ):
                problems.append(f"parties[{i}].api_port: {p.host}:{p.api_port} is also a party's or the dealer's port")
            for role in ("data_owner", "output"):
                if role in p.roles:
                    problems.append(
                        f"parties[{i}].roles: {role} is not used with serving (the clients own the inputs and receive the outputs)"
                    )
        apis = [(p.host, p.api_port) for p in self.parties if p.api_port is not None]
        for host, port in sorted({a for a in apis if apis.count(a) > 1}):
            problems.append(f"parties: api address {host}:{port} is used by more than one party")
        if self.effective_transport != "tls":
            problems.append(
                "transport: serving needs tls (clients authenticate with certificates from the consortium CA)"
            )
        if self.share_cache:
            problems.append("share_cache: not used with serving (the model is shared once, at start)")
        return problems

    def client_files(self, client: str) -> tuple[Path, ...]:
        """(CA certificate, the client's certificate, its private key[, revocation list])."""
        return self.tls_files(client)

    def rank_of(self, name: str) -> int:
        """Rank (position in `parties`) of the party called `name`."""
        for rank, party in enumerate(self.parties):
            if party.name == name:
                return rank
        raise ConfigError(f"{self.source}: no party named {name!r} (parties: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parties]

    @property
    def truncation(self) -> str:
        """The two-party truncation this config runs: protocol.truncation if set, else
        "dealer" wherever the dealer can make it (two parties and randomness: dealer, a
        service as a one-off run; always with comparisons: fss), else CrypTen's "local"."""
        if self.protocol.truncation is not None:
            return self.protocol.truncation
        if self.protocol.comparisons == "fss":
            return "dealer"
        usable = self.randomness == "dealer" and len(self.parties) == 2
        return "dealer" if usable else "local"

    @property
    def processes(self) -> list[str]:
        """Every process of this config: the dealer (when there is one), then the parties."""
        return (["dealer"] if self.dealer is not None else []) + self.names

    def with_role(self, role: str) -> list[PartyConfig]:
        return [p for p in self.parties if role in p.roles]

    @property
    def model_owner(self) -> PartyConfig:
        return self.with_role("model_owner")[0]

    @property
    def data_owners(self) -> list[PartyConfig]:
        return self.with_role("data_owner")

    def receivers_of(self, data_owner: PartyConfig) -> list[PartyConfig]:
        """Who may see the outputs of `data_owner`'s rows: itself if it has role output,
        and every output party that owns no data (in rank order)."""
        return [
            p
            for p in self.parties
            if "output" in p.roles and (p.name == data_owner.name or "data_owner" not in p.roles)
        ]

    @property
    def multi_host(self) -> bool:
        """True when the parties (or the dealer) are not all on one host."""
        hosts = {p.host for p in self.parties} | ({self.dealer.host} if self.dealer else set())
        return len(hosts) > 1

    @property
    def effective_transport(self) -> str:
        return self.transport or ("tls" if self.multi_host else "gloo")

    def tls_files(self, name: str) -> tuple[Path, ...]:
        """(CA certificate, NAME's certificate, NAME's private key[, the CA's revocation list])."""
        tls = self.tls
        if tls is None:  # callers ask only under transport tls, which the validation requires tls for
            raise RuntimeError("tls_files: the configuration has no tls section")
        files = (tls.ca, tls.certs / f"{name}.pem", tls.certs / f"{name}.key")
        return files + ((tls.crl,) if tls.crl is not None else ())


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "path_type": "a file path",
    "too_short": "a non-empty list",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _schemas_in(annotation: Any) -> list[type[BaseModel]]:
    # the sections a field can hold, through Optional, tuple[...] and unions
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in get_args(annotation) for s in _schemas_in(arg)]


def _known_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` (the path of a key inside `schema`) accepts; none
    when the path does not lead to one section."""
    for part in loc:
        if isinstance(part, int):  # an item of a list: the same section
            continue
        field = schema.model_fields.get(part) if isinstance(part, str) else None
        candidates = _schemas_in(field.annotation) if field is not None else []
        if len(candidates) != 1:
            return []
        schema = candidates[0]
    return [field.alias or name for name, field in schema.model_fields.items() if not field.exclude]


def _unknown_key(schema: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """`unknown key`, with the closest key the section knows when one is close."""
    if schema is None or not loc or not isinstance(loc[-1], str):
        return "unknown key"
    close = difflib.get_close_matches(loc[-1], _known_keys(schema, loc[:-1]), n=1)
    return f"unknown key; did you mean {close[0]}?" if close else "unknown key"


def _message(err: ErrorDetails, schema: type[BaseModel] | None = None) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return _unknown_key(schema, err["loc"])
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {value!r}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"expected a value {_BOUNDS[kind]} {bound}, got {value!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}"


def _validation_error(exc: ValidationError, source: str | Path, schema: type[BaseModel] | None = None) -> ConfigError:
    """One line per problem, each naming `source` and the key path (shared by every
    YAML schema of the project); an unknown key is told the closest key of `schema`."""
    lines: list[str] = []
    for err in exc.errors():
        where = _loc(err["loc"])
        if err["type"] == "value_error" and not where:
            lines.extend(f"{source}: {line}" for line in str(err["ctx"]["error"]).splitlines())
        else:
            lines.append(f"{source}: {where}: {_message(err, schema)}")
    return ConfigError("\n".join(lines))


def validate_document(schema: type[_Model], data: Any, source: str | Path) -> _Model:
    """`data` (a parsed YAML document) as an instance of `schema`, or a ConfigError with
    one line per problem."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source, schema) from None


class Resolver(Protocol):
    """resolver's function: a path resolved, None kept."""

    @overload
    def __call__(self, p: Path) -> Path: ...
    @overload
    def __call__(self, p: None) -> None: ...
    @overload
    def __call__(self, p: Path | None) -> Path | None: ...


def resolver(source: str | Path) -> Resolver:
    """A function resolving relative paths against `source`'s folder (the working
    directory for in-memory documents)."""
    base = Path(source).resolve().parent if str(source) != "<memory>" else Path.cwd()

    @overload
    def resolve(p: Path) -> Path: ...
    @overload
    def resolve(p: None) -> None: ...
    @overload
    def resolve(p: Path | None) -> Path | None: ...
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    return resolve


def parse_config(data: Any, source: str | Path = "<memory>") -> Config:
    """Validate a parsed YAML document; relative paths resolve against `source`'s folder.

    Args:
        data: the document (a mapping).
        source: the file it came from, used in messages and to resolve paths.

    Returns:
        The frozen Config; raises ConfigError listing every problem, one per line.
    """
    config = validate_document(Config, data, source)
    resolve = resolver(source)
    parties = tuple(
        p.model_copy(
            update={"weights": resolve(p.weights), "data": resolve(p.data), "storage_key": resolve(p.storage_key)}
        )
        for p in config.parties
    )
    tls = (
        None
        if config.tls is None
        else TlsConfig(ca=resolve(config.tls.ca), certs=resolve(config.tls.certs), crl=resolve(config.tls.crl))
    )
    model = config.model.model_copy(
        update={"public_key": resolve(config.model.public_key), "program": resolve(config.model.program)}
    )
    run_dir = resolve(config.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{source}: run_dir: {run_dir} is a file; expected a folder (created when missing)")
    return config.model_copy(
        update={"parties": parties, "run_dir": run_dir, "tls": tls, "model": model, "source": Path(source)}
    )


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error
    (safe_load keeps the last one silently), and aliases are bounded: each alias is a
    reference, so a few nested ones make a document that takes exponential time to walk
    (the "billion laughs")."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name): refused",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # unannotated in PyYAML's stubs
                )
        return super().compose_node(parent, index)


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Read a YAML file with safe_load; a missing, oversized, binary or malformed file is
    one ConfigError line."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {what} file of {path.stat().st_size} bytes; expected at most {MAX_YAML_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text (UTF-8) {what} file: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text {what} file: it holds NUL bytes")
    try:
        loader = _StrictLoader(text)  # yaml.safe_load, refusing repeated keys
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (safe_load only).

    Args:
        path: the YAML file.

    Returns:
        The frozen Config; raises ConfigError with one line per problem.
    """
    return parse_config(read_yaml(path), Path(path))
