"""The run configuration's schema: one typed, frozen section per YAML mapping, each key
with its type, default, bounds and a comment (the configuration reference is generated
from them). The cross-field rules are in smpc.config.rules, the settings a config
resolves to in smpc.config.plan."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from smpc.config import rules
from smpc.config.plan import Plan, plan_of
from smpc.errors import ConfigError

Role = Literal["model_owner", "data_owner", "output"]
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TOP_K = re.compile(r"top[1-9][0-9]{0,2}")
MAX_SAMPLE_VALUES = 1 << 24  # values in one sample (model.input_shape)


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
    # truncation from the dealer's function-secret-sharing keys (smpc.protocols.fss);
    # ot: the millionaires' protocol on the two parties' OT material (randomness:
    # two-party only, and its default there; smpc.protocols.millionaires)
    comparisons: Literal["circuits", "fss", "ot"] = "circuits"
    # the truncation after every fixed-point product, two parties: "dealer" (one opening
    # of x + r with the dealer's r; never wraps) or "local" (CrypTen's: each party divides
    # its share; wrong by 2^64/d with probability about |x|/2^64). Unset: the dealer's wherever
    # it can make it (Config.plan.truncation)
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
    # dealer: a trusted dealer process; two-party: the two parties make it together, no
    # third host (oblivious transfer, homomorphic encryption); local: CrypTen's TFP,
    # INSECURE, simulation only
    randomness: Literal["local", "dealer", "two-party"] = "local"
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

    @model_validator(mode="before")
    @classmethod
    def _two_party_compares_by_ot(cls, data: Any) -> Any:
        # randomness: two-party makes its comparisons' material by OT: the millionaires'
        # protocol unless protocol.comparisons says otherwise (circuits cost 13x its volume)
        if isinstance(data, dict) and data.get("randomness") == "two-party":
            protocol = data.get("protocol")
            if protocol is None or (isinstance(protocol, dict) and "comparisons" not in protocol):
                data = {**data, "protocol": {**(protocol or {}), "comparisons": "ot"}}
        return data

    @model_validator(mode="after")
    def _rules(self) -> Config:
        # the cross-field rules, each a named function (smpc.config.rules): all problems at once
        problems = rules.problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def plan(self) -> Plan:
        """The settings this config resolves to (smpc.config.plan): the truncation run, the
        transport, the processes, whether it spans hosts."""
        return plan_of(self)

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

    def tls_files(self, name: str) -> tuple[Path, ...]:
        """(CA certificate, NAME's certificate, NAME's private key[, the CA's revocation list])."""
        tls = self.tls
        if tls is None:  # callers ask only under transport tls, which the validation requires tls for
            raise RuntimeError("tls_files: the configuration has no tls section")
        files = (tls.ca, tls.certs / f"{name}.pem", tls.certs / f"{name}.key")
        return files + ((tls.crl,) if tls.crl is not None else ())
