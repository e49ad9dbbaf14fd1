"""`smpc bench STUDY.yaml [--out DIR]`: measure every cell of a study with real party
processes and write results.jsonl, results.csv, report.md and PNG plots.

Each run of a cell is a fresh launch (`launch.run`) of its parties (and dealer) on
this machine: `warmup` runs whose numbers are dropped, then `repetitions` measured
runs. After each run the same inputs go through the plain PyTorch model, one thread
like each party, for the slowdown ratio. A cell that fails is recorded with its
error and the study goes on. Every cell's run config is kept (cells/NNN/config.yaml),
so any cell can be re-run alone with `smpc launch`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
import yaml

from launch.study.report import PARTY_COUNTS, STATS
from smpc.runs.processes import free_port
from smpc.runs.runner import Report, run
from launch.study.spec import Cell, ModelEntry, Study
from smpc import artifacts, keys
from smpc.model import zoo
from smpc.errors import ConfigError, SmpcError

RESULTS = "results.jsonl"
HELPER_NAMES = ("carol", "dave", "erin", "frank", "grace", "heidi")


def consortium(parties: int, data: Path, weights: Path) -> list[dict[str, Any]]:
    """The parties of a one-machine run: alice owns the data and gets the outputs, bob
    owns the model, the others only compute. Fresh local ports."""
    members: list[dict[str, Any]] = [
        {
            "name": "alice",
            "host": "127.0.0.1",
            "port": free_port(),
            "roles": ["data_owner", "output"],
            "data": str(data),
        },
        {"name": "bob", "host": "127.0.0.1", "port": free_port(), "roles": ["model_owner"], "weights": str(weights)},
    ]
    return members + [{"name": n, "host": "127.0.0.1", "port": free_port()} for n in HELPER_NAMES[: parties - 2]]


def consortium_keys(directory: Path, parties: int) -> None:
    """A CA and certificates for every name `consortium` and the dealer can use."""
    if not (directory / "ca.pem").exists():
        keys.create_ca(directory)
    for name in ("alice", "bob", "dealer", *HELPER_NAMES[: parties - 2]):
        if not (directory / f"{name}.pem").exists():
            keys.issue(directory, name)


def run_config(
    cell: Cell, study: Study, data: Path, weights: Path, run_dir: Path, key_dir: Path | None
) -> dict[str, Any]:
    """The run config (as a YAML document) of one run of `cell`."""
    doc: dict[str, Any] = {
        "parties": consortium(cell.parties, data, weights),
        "model": {"architecture": cell.model.architecture, "input_shape": list(cell.model.shape)},
        "batch_size": cell.batch_size,
        "randomness": cell.randomness,
        "transport": cell.transport,
        "protocol": {
            "precision_bits": cell.precision_bits,
            "functions": cell.functions.model_dump(),
            "comparisons": cell.comparisons,
        },
        # a study measures fidelity (error, agreement) rather than gating on it
        "fidelity": {"min_cosine": None},
        "timeouts": study.timeouts.model_dump(),
        "run_dir": str(run_dir),
    }
    if cell.randomness == "dealer":
        doc["dealer"] = {"host": "127.0.0.1", "port": free_port()}
    if cell.transport == "tls":
        doc["tls"] = {"ca": str(key_dir / "ca.pem"), "certs": str(key_dir)}
    return doc


def environment() -> dict[str, Any]:
    """What the numbers were measured on: versions, CPU, threads, code revision."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    root = Path(__file__).resolve().parent.parent
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = (
            bool(
                subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "crypten": pkg("crypten"),
        "numpy": pkg("numpy"),
        "smpc": pkg("smpc"),
        "smpc_commit": commit,
        "smpc_modified": dirty,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads_per_party": 1,  # parties/one_off.py: torch.set_num_threads(1)
        "plain_threads": 1,
    }


class _Inputs:
    """A model's weights and inputs for the study, written once under inputs/."""

    def __init__(self, entry: ModelEntry, study: Study, directory: Path) -> None:
        torch.manual_seed(study.seed)
        self.model = zoo.build(entry.architecture)
        if entry.weights is not None:
            artifacts.load_weights(self.model, entry.weights)
            self.weights = entry.weights
        else:  # random weights, the same for every cell of this study
            self.weights = directory / f"{entry.name}.weights.safetensors"
            artifacts.save_weights(self.model, self.weights)
        self.model.eval()
        samples = entry.samples or study.samples
        if entry.data is not None:
            dataset = artifacts.load_data(entry.data, entry.shape)
            self.inputs = dataset.inputs[:samples]
            labels = None if dataset.labels is None else dataset.labels[:samples]
        else:
            generator = torch.Generator().manual_seed(study.seed + 1)
            self.inputs, labels = torch.randn(samples, *entry.shape, generator=generator), None
        self.data = directory / f"{entry.name}.data.safetensors"
        artifacts.save_data(self.data, self.inputs, labels)

    def plain_seconds(self, batch_size: int) -> float:
        """Time of the plain PyTorch forward over the same inputs and batches, one
        thread: after a warm-up pass, the mean of as many passes as fit in 0.2 s
        (at least one), since one pass of a small model is too short to time alone."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)

        def one_pass() -> None:
            for i in range(0, len(self.inputs), batch_size):
                self.model(self.inputs[i : i + batch_size])

        try:
            with torch.no_grad():
                one_pass()
                passes, start = 0, time.perf_counter()
                while passes == 0 or (time.perf_counter() - start < 0.2 and passes < 1000):
                    one_pass()
                    passes += 1
                return (time.perf_counter() - start) / passes
        finally:
            torch.set_num_threads(threads)


def stat(values: list[float]) -> dict[str, float]:
    """Median, min and max of the measured runs."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _run_metrics(report: Report, plain_s: float) -> dict[str, Any]:
    return {
        "online_s": report.online_s,
        "online_s_per_sample": report.online_s / report.samples,
        "offline_s": report.offline_s,
        "wall_s": report.wall_s,
        "plain_s": plain_s,
        "slowdown": report.online_s / plain_s if plain_s > 0 else None,
        "max_abs_error": report.max_abs_error,
        "agreement": report.agreement,
        "accuracy_mpc": report.accuracy_mpc,
        "accuracy_plain": report.accuracy_plain,
        "parties": {
            n: {k: p.get(k) or 0 for k in PARTY_COUNTS} | {"peak_rss_mib": p["peak_rss_mib"]}
            for n, p in report.parties.items()
        },
        "dealer_s_per_batch": (report.dealer or {}).get("generation_s_per_batch"),
    }


def summarize(runs: list[dict[str, Any]], layers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A cell's metrics over its measured runs: median/min/max of every per-run number;
    per party the median bytes and rounds and the peak memory; per-layer figures from
    the run with the median online time."""
    out: dict[str, Any] = {}
    for key in STATS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = stat(values) if values else None
    out["parties"] = {
        name: {k: int(statistics.median(r["parties"][name][k] for r in runs)) for k in PARTY_COUNTS}
        | {"peak_rss_mib": stat([r["parties"][name]["peak_rss_mib"] for r in runs])}
        for name in runs[0]["parties"]
    }
    dealer = [r["dealer_s_per_batch"] for r in runs if r.get("dealer_s_per_batch") is not None]
    out["dealer_s_per_batch"] = stat(dealer) if dealer else None
    out["layers"] = layers
    return out


def measure_cell(
    cell: Cell, study: Study, inputs: _Inputs, cell_dir: Path, key_dir: Path | None, tick: Callable[[], None]
) -> dict[str, Any]:
    """Warm-up runs, then the measured runs, of one cell; raises on the first failure."""
    runs, layer_sets = [], []
    for attempt in range(study.warmup + study.repetitions):
        doc = run_config(cell, study, inputs.data, inputs.weights, cell_dir / "run", key_dir)
        config_path = cell_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        report = run(config_path, echo=False, warn_local=False)
        plain_s = inputs.plain_seconds(cell.batch_size)
        if attempt >= study.warmup:
            runs.append(_run_metrics(report, plain_s))
            layer_sets.append({n: p["layers"] for n, p in report.parties.items()})
        tick()
    by_time = sorted(range(len(runs)), key=lambda i: runs[i]["online_s"])
    summary = summarize(runs, layer_sets[by_time[len(by_time) // 2]])
    return {
        "samples": len(inputs.inputs),
        "batches": -(-len(inputs.inputs) // cell.batch_size),
        **summary,
        "runs": runs,
    }


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SmpcError) else f"{type(exc).__name__}: {exc}"


def run_study(study: Study, out: Path, progress: bool = True, force: bool = False) -> list[dict[str, Any]]:
    """Measure every cell of `study`, appending one record per cell to out/results.jsonl
    as it finishes, then write the CSV, the Markdown report and the plots.

    Args:
        study: the validated study.
        out: the results folder (created; an existing study's results need `force`).
        progress: show a progress bar over all runs of all cells (stderr).
        force: replace the results of an earlier study in `out`.

    Returns:
        The records, in cell order. Raises ConfigError when `out` holds results and
        `force` is not set. On Ctrl-C the report covers the cells finished so far.
    """
    from tqdm import tqdm

    from launch.study import report as report_module

    out = Path(out).resolve()  # cell configs live below `out`: their paths must not depend on the cwd

    results = out / RESULTS
    if results.exists() and not force:
        raise ConfigError(f"{results}: results of an earlier study are here (use --force to replace them, or --out)")
    for stale in (results, out / report_module.CSV, out / report_module.MARKDOWN, out / "cells", out / "inputs"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    for png in out.glob("*.png"):
        png.unlink()
    out.mkdir(parents=True, exist_ok=True)
    cells = study.cells()
    env = environment()
    if any(c.randomness == "local" for c in cells):
        print(
            "note: cells with randomness 'local' use CrypTen's TFP, where every party can derive the Beaver "
            "triples: they measure a simulation, not a secure run",
            file=sys.stderr,
        )
    key_dir = None
    if any(c.transport == "tls" for c in cells):
        key_dir = out / "inputs" / "keys"
        key_dir.mkdir(parents=True, exist_ok=True)
        consortium_keys(key_dir, max(c.parties for c in cells))

    per_cell = study.warmup + study.repetitions
    bar = tqdm(total=len(cells) * per_cell, unit="run", disable=not progress, file=sys.stderr, ncols=100)
    prepared: dict[str, _Inputs | BaseException] = {}
    records: list[dict[str, Any]] = []
    try:
        for cell in cells:
            bar.set_description(f"cell {cell.index + 1}/{len(cells)}")
            bar.set_postfix_str(report_module.describe({"settings": cell.settings()}, list(report_module.SETTINGS)))
            cell_dir = out / "cells" / f"{cell.index:03d}"
            cell_dir.mkdir(parents=True, exist_ok=True)
            done_before = bar.n
            started = time.perf_counter()
            record: dict[str, Any] = {"study": study.name, "cell": cell.index, "settings": cell.settings()}
            try:
                if cell.model.name not in prepared:
                    try:
                        prepared[cell.model.name] = _Inputs(cell.model, study, out / "inputs")
                    except Exception as exc:  # every cell of this model fails the same way
                        prepared[cell.model.name] = exc
                inputs = prepared[cell.model.name]
                if isinstance(inputs, BaseException):
                    raise inputs
                record.update(measure_cell(cell, study, inputs, cell_dir, key_dir, lambda: bar.update(1)))
                record.update(status="ok", error=None)
            except Exception as exc:
                record.update(status="failed", error=_error_text(exc))
            record.update(
                elapsed_s=round(time.perf_counter() - started, 2),
                config=str((cell_dir / "config.yaml").relative_to(out)),
                logs=str((cell_dir / "run").relative_to(out)),
                warmup=study.warmup,
                repetitions=study.repetitions,
                env=env,
            )
            bar.update(done_before + per_cell - bar.n)
            with results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            bar.write(report_module.one_line(record), file=sys.stderr)
    finally:
        bar.close()
        if records:
            report_module.write_all(out, study)
    return records
