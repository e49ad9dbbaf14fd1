"""One organization's process, as an object with phases.

Both a one-off joint inference (`smpc launch`, `smpc party`) and a standing service
(`smpc serve`) walk the same phases:

    prepare      check the local config and this party's own files, convert the model
    join         connect to the other parties (a context: always leaves)
    agree        compare settings with every party; check in with the dealer
    open_material  bind the dealer's material: a run's stream, or a service's pool
    share_model  secret-share the model owner's weights (once)
    run          compute batches along the one compute path (`compute`), from a
                 workload: a data owner's file (parties.one_off) or clients' queries
                 (parties.service), which says where batches come from and where
                 their results go
    close        say goodbye to the dealer

A one-off run and a service differ only in their workload: every protocol setting
(dealer truncation, FSS comparisons, range checks, meters) lives in `compute`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Callable, Iterator

import torch

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
from smpc import agreement, artifacts, keys, runfiles, sealed, session, share_cache
from smpc.model import model_dir
from smpc.audit import AuditLog
from smpc.config import Config
from smpc.model.program import Program
from smpc.dealer.client import DealerClient
from smpc.dealer.provider import PROVIDER_NAME, PartyProvider
from smpc.errors import AgreementError, PartyError, RangeCheckError
from smpc.model.execute import run_program
from smpc.meter import LayerMeter
from smpc.model import calibrate, pack
from smpc.model.buckets import Bucket
from smpc.protocols import fixed, switches, top_k
from smpc.runtime import ProtocolSettings, Runtime
from smpc.twoparty import provider as two_party
from smpc.twoparty.link import Link


@dataclass
class Batch:
    """One secret batch, as a workload hands it to `Party.compute`.

    Attributes:
        bucket: the shape of the program it runs on (a service pads to one of its buckets).
        index: which batch of that bucket this is (names a service's dealer streams).
        inputs: the secret inputs by name (CrypTensors of the program's share shapes).
        context: what the workload needs to deliver the results (rows, queries).
    """

    bucket: Bucket
    index: int
    inputs: dict[str, Any]
    context: Any = None


@dataclass
class Computed:
    """A batch's results, still secret-shared: the program's outputs, in order, the
    indices of the first output's K best classes for each top-K a receiver may learn;
    and what computing it cost this party (seconds by phase, bytes sent, rounds)."""

    outputs: list[Any]
    best: dict[int, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    rounds: int = 0


class Workload(Protocol):
    """Where batches come from and where their results go: a one-off run's data owners
    and receivers (parties.one_off), or a service's clients (parties.service)."""

    def batches(self) -> Iterator[Batch]:
        """The batches to compute, the same at every party, in the same order."""

    def deliver(self, batch: Batch, computed: Computed) -> None:
        """Reveal the results to whom they belong, or return the shares."""

    def refused(self, batch: Batch, error: RangeCheckError) -> None:
        """A range check failed at every party at once: raise to stop, or answer and go on."""


class Party:
    """One party of `config`, named `name`.

    Args:
        config: the validated configuration (the same file at every party).
        name: which party this process is.
    """

    def __init__(self, config: Config, name: str) -> None:
        self.config = config
        self.name = name
        self.rank = config.rank_of(name)
        self.me = config.parties[self.rank]
        self.owner = config.rank_of(config.model_owner.name)
        self.buckets: tuple[Bucket, ...] = ()
        self.programs: dict[Bucket, Program] = {}
        self.params: dict[str, Any] = {}
        self.provider: PartyProvider | two_party.TwoPartyProvider | None = None
        self.dealer: DealerClient | None = None  # with randomness: dealer, once checked in
        self.runtime: Runtime | None = None  # from join on
        self.audit = AuditLog(runfiles.audit_path(config, name), name)
        self.weights_sha256: str | None = None
        self.fields: dict[str, str] = {}
        self.checks: dict[Bucket, calibrate.RangeChecks | None] = {}  # per shape bucket
        self.widths: dict[Bucket, calibrate.ComparisonWidths | None] = {}  # fss: narrow comparisons per bucket

    @property
    def is_owner(self) -> bool:
        return self.rank == self.owner

    @property
    def program(self) -> Program:
        """The program of the first shape bucket (the only one of a one-off run)."""
        return self.programs[self.buckets[0]]

    def prepare(self) -> None:
        """Check this party's files and convert the model, before anyone connects: a
        tampered model or an unsupported op stops this party here."""
        torch.set_num_threads(1)
        # the owner's weights are read (and verified first, when signed) once, for the
        # program the parameters are shared from; a service's other shape buckets need
        # only the architecture, since every bucket runs on the same shared parameters
        weights = self.me.weights if self.is_owner else None
        self.buckets = pack.run_buckets(self.config)
        first, *others = self.buckets
        with phase("converted the model" + (" (weights verified and read)" if weights is not None else "")):
            self.programs[first] = pack.build_program(self.config, weights, first)
            for b in others:
                self.programs[b] = pack.build_program(self.config, None, b)
        if self.config.plan.transport == "tls":  # an expired, revoked or foreign certificate stops here
            keys.check_certificate(self.name, *self.config.tls_files(self.name))
        if self.me.storage_key is not None:
            sealed.load_key(self.me.storage_key)  # a missing or exposed key fails now, not after the run
        top_k.check_supported(self.config, self.program)
        self.checks = {b: calibrate.range_checks(self.config, p) for b, p in self.programs.items()}
        self.widths = {b: calibrate.comparison_widths(self.config, p) for b, p in self.programs.items()}
        self.fields = agreement.fields(
            self.config, self.program, self.checks[first], [self.programs[b] for b in others]
        )
        if self.is_owner:
            self.weights_sha256 = artifacts.file_digest(model_dir.weights_file(self.me.weights))
        self.audit.record(
            "start",
            rank=self.rank,
            roles=list(self.me.roles),
            transport=self.config.plan.transport,
            randomness=self.config.randomness,
            architecture=self.program.architecture_fingerprint(),
            weights_sha256=self.weights_sha256,
        )

    @property
    def meter(self) -> LayerMeter | None:
        """The session's cost meter (the runtime's: it counts from the session start, so
        every byte sent gets a label); None before join."""
        return self.runtime.meter if self.runtime is not None else None

    def _connection_event(self, event: str, line: str) -> None:
        print(line, flush=True)
        self.audit.record(event, message=line)

    @contextlib.contextmanager
    def join(self) -> Iterator[None]:
        """Be connected to every other party inside the block; always leave."""
        config = self.config
        if config.plan.transport == "gloo" and config.plan.multi_host:
            print("warning: transport is gloo across hosts: shares travel unencrypted and unauthenticated", flush=True)
        joining = time.perf_counter()
        provider = {"dealer": PROVIDER_NAME, "two-party": two_party.PROVIDER_NAME}.get(config.randomness, "TFP")
        settings = ProtocolSettings.of(config, provider)
        self.runtime = Runtime(settings)
        with self.runtime.joined(
            self.rank,
            config.names,
            [(p.host, p.port) for p in config.parties],
            config.timeouts.connect_s,
            config.timeouts.op_s,
            tls=config.tls_files(self.name) if config.plan.transport == "tls" else None,
            log=self._connection_event,
        ):
            print(f"connected to every party: {time.perf_counter() - joining:.2f} s", flush=True)
            try:
                yield
            except BaseException as exc:
                # the dealer must not take a failure for the end of the work: it hears the cause
                self.close(bye=False, reason=str(exc) or type(exc).__name__)
                raise
            self.close()

    def agree(self) -> None:
        """Compare settings with every party (all raise together on a mismatch), then,
        with randomness: dealer, check in with the dealer and take this party's seed."""
        with phase(
            "settings agreed" + (" (and checked in with the dealer)" if self.config.randomness == "dealer" else "")
        ):
            try:
                agreement.check_parties(self.config, self.fields)
            except AgreementError as exc:
                if self.config.randomness == "dealer":
                    DealerClient.report_abort(self.config, self.rank, self.fields, str(exc))
                raise
            if self.config.randomness == "dealer":  # after the parties agree, before any tuple is used
                self.dealer = DealerClient.check_in(self.config, self.rank, self.fields)
                self.provider = PartyProvider()
                switches.register_provider(PROVIDER_NAME, self.provider)
            elif self.config.randomness == "two-party":  # its material is made in the offline phase
                self.provider = two_party.TwoPartyProvider()
                switches.register_provider(two_party.PROVIDER_NAME, self.provider)

    def make_material(self, batches: int) -> tuple[int, int]:
        """With randomness: two-party, the offline phase: set up with the other party
        (base OTs, public keys), trace a batch on shapes, and make the material of
        `batches` batches together. Returns the bytes and rounds it sent (they are not
        the online phase's)."""
        if not isinstance(self.provider, two_party.TwoPartyProvider):
            return 0, 0
        link = Link(peer=f"party {self.config.names[1 - self.rank]}")
        with phase("two-party offline phase (the material of every batch, made with the other party)"):
            self.provider.connect(link)
            bucket = self.buckets[0]
            requests = two_party.trace_requests(self.config, self.programs[bucket], self.checks[bucket])
            self.provider.make(requests, batches)
        return link.bytes_sent, link.rounds

    def open_material(self) -> None:
        """With the dealer, bind this party's provider to what the dealer sends it: a
        one-off run's stream (read from `start_run` on), or a service's pool."""
        if self.dealer is None:
            return
        service = self.config.serving is not None
        source = self.dealer.open_pool() if service else self.dealer.open_stream()
        self.provider.bind(self.rank, self.dealer.seed, source, pooled=service)

    def await_material(self, ready: Callable[[float], bool]) -> float:
        """Wait, all parties together, until the dealer's offline phase is done at every
        party that reads from it (`ready(wait_s)`: this party's, waiting at most that
        long). The parties compare their flags every few seconds, so that one waiting
        for the dealer never looks gone to the others (each step is bounded by
        timeouts.op_s); the whole wait by timeouts.run_s. Returns the seconds waited."""
        timeouts = self.config.timeouts
        started = time.monotonic()
        step = min(2.0, timeouts.op_s / 4)
        while True:
            mine = ready(step)
            if all(int(flag[0]) for flag in session.all_gather_int64(torch.tensor([int(mine)]))):
                return time.monotonic() - started
            if time.monotonic() - started > timeouts.run_s:
                raise PartyError(
                    f"the dealer's offline phase did not finish within timeouts.run_s = {timeouts.run_s:g} s"
                )

    def compute(self, batch: Batch) -> Computed:
        """The one compute path of a run and a service: switch to the batch's dealer
        material, run the program on shares (range checks, truncation and comparisons as
        agreed; every byte charged to a layer), then the top-K classes receivers learn.

        Raises:
            RangeCheckError: at every party at once, when a checked tensor leaves its range.
        """
        before = session.communication_stats()
        started = time.perf_counter()
        if self.provider is not None:
            self.provider.next_batch(batch.bucket, batch.index)
            if self.meter is not None:  # the wait for the dealer is a row of its own
                self.meter.charge("<dealer material>", "wait")
        material_s = time.perf_counter() - started
        outputs = run_program(
            self.programs[batch.bucket],
            self.params,
            batch.inputs,
            self.meter,
            checks=self.checks[batch.bucket],
            widths=self.widths[batch.bucket],
        )
        best = {k: top_k.top_k(outputs[0], k) for k in top_k.reveal_kinds(self.config)}
        after = session.communication_stats()
        return Computed(
            outputs,
            best,
            seconds={"dealer_material": material_s, "program": time.perf_counter() - started - material_s},
            bytes_sent=after["bytes_sent"] - before["bytes_sent"],
            rounds=after["rounds"] - before["rounds"],
        )

    def run(self, workload: Workload) -> None:
        """Compute every batch of `workload` and deliver its results; a failed range check
        is the workload's to answer (a run stops, a service fails those queries)."""
        for batch in workload.batches():
            try:
                computed = self.compute(batch)
            except RangeCheckError as exc:
                workload.refused(batch, exc)
                continue
            workload.deliver(batch, computed)

    def share_model(self) -> None:
        """Secret-share the owner's weights (or reuse this party's sealed shares)."""
        with phase("shared the model"):
            self._share_model()

    def _share_model(self) -> None:
        config = self.config
        if config.share_cache:
            self.params = share_cache.load_or_share(
                self.program,
                runfiles.shares_path(config, self.name),
                self.me.storage_key,
                config.names,
                self.owner,
                self.weights_sha256,
                self.audit.record,
            )
        else:
            self.params = session.share_parameters(self.program, self.owner)
        if self.provider is not None:  # the weights' session masks: W - B opened once (smpc.protocols.fixed)
            self.params = fixed.open_masks(self.program, self.params, self.provider.seed)

    def close(self, bye: bool = True, reason: str | None = None) -> None:
        """Tell the dealer this party is done (a dealer gone by now no longer matters);
        without `bye`, hang up, first telling it `reason` (why this party stops)."""
        if self.dealer is not None:
            self.dealer.close(bye, reason)

    def stats(self) -> dict[str, Any]:
        """Rounds and bytes this party has sent (and to whom, over TLS)."""
        record: dict[str, Any] = dict(session.communication_stats())
        per_peer = session.bytes_per_peer()
        if per_peer is not None:
            record["bytes_per_peer"] = per_peer
        return record


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Print one line with the time of a phase as it ends, so that a party's log is never
    silent for long (a phase that fails prints its error instead)."""
    started = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - started:.2f} s", flush=True)


def elapsed(since: float) -> float:
    """Seconds since `since` (a perf_counter reading), rounded for records."""
    return round(time.perf_counter() - since, 4)
