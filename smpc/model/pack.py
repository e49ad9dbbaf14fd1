"""Packed model directories: any PyTorch module (a Hugging Face model included) becomes a
converted program plus the owner's weights, and every party builds the computation from
files alone.

A packed directory holds `program.json` and `constants.safetensors` (the architecture, as
data: smpc.model.program_format) for its largest shapes, the same for every smaller shape
bucket under `buckets/` (smpc.model.buckets), `weights.safetensors` (the secret
parameters, by graph name: only the model owner needs this file), `manifest.json`, and a
text model's `tokenizer.json` (public). It can be signed and
verified like any model directory (smpc.model.model_dir). Parties load the program: they need
neither the model's Python code nor the library it was written with.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from smpc import artifacts
from smpc.model import model_dir, zoo
from smpc.model.convert import convert
from smpc.model.program import Program
from smpc.errors import ArtifactError, ConfigError, ConversionError
from smpc.model import calibrate, program_cache, program_format
from smpc.model.buckets import Bucket, grid

PROGRAM_ARCHITECTURE = "program"  # the manifest's architecture for a packed program
TOKENIZER = "tokenizer.json"  # a packed text model's tokenizer (public: it travels with the program)


@dataclass(frozen=True)
class Layout:
    """What a packed directory's manifest says of its shapes: the buckets it holds, the
    sequence length it was packed for (0: none), which dimension of each input and output
    is the sequence, whether padded positions are masked (an input of kind binary, the
    attention mask), and its tokenizer file (public; None when it has none)."""

    top: Bucket
    buckets: tuple[Bucket, ...]
    seq_dims: dict[str, int | None] = field(default_factory=dict)
    masked: bool = False
    tokenizer: str | None = None

    @property
    def seq(self) -> int:
        return self.top.seq


def _examples(example_inputs: Any, example_kwargs: dict[str, Any] | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return args, dict(example_kwargs or {})


def _sequence_length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # a sequence model takes integer [batch, seq] tensors (token ids, masks) and no float
    # ones: it is packed for every length up to seq; anything else for its one shape
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    if not tensors or any(t.is_floating_point() or t.dim() != 2 for t in tensors):
        return 0
    lengths = {t.shape[1] for t in tensors}
    return lengths.pop() if len(lengths) == 1 else 0


def _cut(value: Any, bucket: Bucket) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    value = value[: bucket.rows]
    return value[:, : bucket.seq] if bucket.seq else value


def pack(
    model: torch.nn.Module,
    example_inputs: Any,
    out_dir: str | Path,
    example_kwargs: dict[str, Any] | None = None,
    buckets: bool = True,
    tokenizer: str | Path | None = None,
) -> Program:
    """Convert `model` and write a packed model directory.

    Args:
        model: any PyTorch module (e.g. a Hugging Face model with attn_implementation="eager").
        example_inputs: a tensor or a tuple of tensors with the largest shapes to serve,
            batch first (B rows; for token models [B, S]).
        out_dir: the directory to create (must not exist yet).
        example_kwargs: tensors passed by keyword (e.g. ``attention_mask``).
        buckets: also convert for every smaller bucket (smpc.model.buckets: rows 1, 2,
            4, ... up to B, and for token models lengths 8, 16, ... up to S), so that a
            service can run any batch up to B rows of sequences up to S tokens.
        tokenizer: a tokenizer.json file (Hugging Face tokenizers) to ship with the
            program, so that clients tokenize on their own machines.

    Returns:
        The converted Program for the largest shapes (with the real weights).
    """
    out = Path(out_dir)
    if out.exists():
        raise ArtifactError(f"{out}: already exists")
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise ArtifactError(f"{tokenizer}: tokenizer file not found")
    args, kwargs = _examples(example_inputs, example_kwargs)
    program = convert(model, args, kwargs)
    # a token model (its ids feed an embedding) is packed for every length up to its own
    seq = _sequence_length(args, kwargs) if any(s.kind == "ids" for s in program.inputs) else 0
    top = Bucket(batch_size(program), seq)
    others = [b for b in grid(top.rows, seq) if b != top] if buckets else []
    converted = {}
    for bucket in others:  # every bucket's parameters must be the same tensors: shared once
        small = convert(model, tuple(_cut(a, bucket) for a in args), {k: _cut(v, bucket) for k, v in kwargs.items()})
        if {k: tuple(v.shape) for k, v in small.secret.items()} != {
            k: tuple(v.shape) for k, v in program.secret.items()
        }:
            raise ConversionError(
                f"{bucket.label}: the model's parameters differ from those at {top.label}; pack with buckets=False"
            )
        converted[bucket] = small
    seq_dims = _sequence_dims(model, args, kwargs, program, converted, seq)
    out.mkdir(parents=True)
    try:
        program_format.save(program, out)
        for bucket, small in converted.items():
            program_format.save(small, out / bucket.folder)
        save_file({k: v.contiguous() for k, v in program.secret.items()}, str(out / model_dir.WEIGHTS))
        if tokenizer is not None:
            shutil.copyfile(tokenizer, out / TOKENIZER)
        manifest = {
            "format": model_dir.FORMAT,
            "version": model_dir.VERSION,
            "architecture": PROGRAM_ARCHITECTURE,
            "input_shape": [],
            "inputs": [
                {"name": s.name, "shape": list(s.shape), "kind": s.kind, "depth": s.depth} for s in program.inputs
            ],
            "outputs": [{"name": n, "shape": list(shape)} for n, shape in program.outputs],
            "tensors": {k: list(v.shape) for k, v in sorted(program.secret.items())},
            "buckets": [[b.rows, b.seq] for b in sorted([top, *converted])],
            "sequence": {"length": seq, "dims": seq_dims, "masked": any(s.kind == "binary" for s in program.inputs)},
            "tokenizer": TOKENIZER if tokenizer is not None else None,
        }
        (out / model_dir.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-written
        raise
    return program


def _sequence_dims(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    program: Program,
    converted: dict[Bucket, Program],
    seq: int,
) -> dict[str, int | None]:
    # which dimension of each input and output follows the sequence length: the one whose
    # size changes with it (a probe one token shorter when no smaller bucket was made)
    if not seq:
        return {}
    other = next((p for b, p in converted.items() if b.rows == batch_size(program) and b.seq != seq), None)
    if other is None:
        if seq < 2:
            return {s.name: 1 for s in program.inputs} | {name: None for name, _ in program.outputs}
        probe = Bucket(batch_size(program), seq - 1)
        other = convert(model, tuple(_cut(a, probe) for a in args), {k: _cut(v, probe) for k, v in kwargs.items()})
    dims: dict[str, int | None] = {s.name: 1 for s in program.inputs}
    for (name, shape), (_, shorter) in zip(program.outputs, other.outputs):
        changed = [d for d, (a, b) in enumerate(zip(shape, shorter)) if a != b]
        dims[name] = changed[0] if len(changed) == 1 and shape[changed[0]] == seq else None
    return dims


def layout(directory: Path) -> Layout:
    """The shapes a packed directory holds (a directory packed before buckets holds one)."""
    path = Path(directory) / model_dir.MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: manifest not found (pack the model with smpc.pack or `smpc model pack`)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not JSON ({exc})") from None
    try:
        rows = int(manifest["inputs"][0]["shape"][0])
        sequence = manifest.get("sequence") or {}
        seq = int(sequence.get("length", 0))
        held = tuple(sorted(Bucket(int(r), int(s)) for r, s in manifest.get("buckets") or [[rows, seq]]))
        dims = {str(k): (None if v is None else int(v)) for k, v in (sequence.get("dims") or {}).items()}
        tokenizer = manifest.get("tokenizer")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed inputs, buckets or sequence ({exc})") from None
    top = Bucket(rows, seq)
    if (
        top not in held
        or any(b.rows < 1 or b.seq < 0 or b.rows > rows or b.seq > seq for b in held)
        or len(held) > 4096
    ):
        raise ArtifactError(
            f"{path}: buckets: expected shapes up to {top.label}, got {[[b.rows, b.seq] for b in held]}"
        )
    if tokenizer is not None and tokenizer != TOKENIZER:
        raise ArtifactError(f"{path}: tokenizer: expected {TOKENIZER!r} or null, got {tokenizer!r}")
    return Layout(top, held, dims, bool(sequence.get("masked", False)), tokenizer)


def load_bucket(directory: Path, bucket: Bucket, held: Layout | None = None) -> Program:
    """The program of one bucket of a packed directory."""
    held = held or layout(directory)
    if bucket not in held.buckets:
        raise ArtifactError(
            f"{directory}: holds no program for {bucket.label} (packed: {', '.join(b.label for b in held.buckets)})"
        )
    return program_format.load(Path(directory) if bucket == held.top else Path(directory) / bucket.folder)


def batch_size(program: Program) -> int:
    """The batch size a program was converted for (the first dimension of its inputs)."""
    return program.inputs[0].shape[0]


def load_owner_secret(program: Program, weights: Path) -> None:
    """Replace the program's zero placeholders by the owner's weights (exact names and shapes)."""
    tensors = artifacts.read_fitting(model_dir.weights_file(weights), program.secret, "the program")
    program.secret.update({name: value.float() for name, value in tensors.items()})


def run_buckets(config: Any) -> tuple[Bucket, ...]:
    """The shapes a run of `config` computes: a one-off run's one (`batch_size` rows, at
    the packed length), a service's every bucket up to `serving.max_batch` rows.

    Raises ConfigError naming the key when the packed directory holds no such shape."""
    spec, serving = config.model, config.serving
    if spec.program is None:
        return tuple(Bucket(b) for b in (serving.batch_sizes if serving is not None else (config.batch_size,)))
    held = layout(spec.program)
    rows = sorted({b.rows for b in held.buckets})
    if serving is None:
        if Bucket(config.batch_size, held.seq) not in held.buckets:
            raise ConfigError(
                f"{config.source}: batch_size: the program in {spec.program} was packed for batches of "
                f"{', '.join(map(str, rows))} rows, got {config.batch_size}"
            )
        return (Bucket(config.batch_size, held.seq),)
    if serving.max_batch not in rows:
        raise ConfigError(
            f"{config.source}: serving.max_batch: the program in {spec.program} was packed for batches of "
            f"{', '.join(map(str, rows))} rows, got {serving.max_batch} (pick one, or pack with --batch {serving.max_batch})"
        )
    return tuple(b for b in held.buckets if b.rows <= serving.max_batch)


def build_program(config: Any, owner_weights: Path | None = None, bucket: Bucket | None = None) -> Program:
    """The computation of `config`, as every party (and the dealer) builds it.

    Args:
        config: the run config (smpc.config.Config).
        owner_weights: the model owner's `weights` entry; None elsewhere (the parameters
            stay zero placeholders of the right shapes).
        bucket: the shape to build for (a service runs several); default the run's
            first (`run_buckets`).

    Returns:
        The Program; a packed program comes from `model.program`, a zoo or
        ``module:factory`` architecture is built and converted here.
    """
    spec = config.model
    bucket = bucket or run_buckets(config)[0]
    if spec.program is not None:
        held = layout(spec.program)
        program = load_bucket(spec.program, bucket, held)
        if owner_weights is not None:
            if spec.public_key is not None and not owner_weights.is_dir():
                raise ArtifactError(
                    f"{owner_weights}: model.public_key is set, so the weights must be a signed model directory"
                )
            if spec.public_key is not None:  # verified before a single weight is read
                manifest = model_dir.verify(owner_weights, spec.public_key)
                if manifest.get("architecture") != PROGRAM_ARCHITECTURE:
                    raise ArtifactError(
                        f"{owner_weights}: signed for architecture {manifest.get('architecture')!r}, not a packed program"
                    )
                if owner_weights.resolve() != Path(spec.program).resolve():
                    signed = load_bucket(owner_weights, bucket)
                    if signed.architecture_fingerprint() != program.architecture_fingerprint():
                        raise ArtifactError(f"{owner_weights}: the signed program differs from {spec.program}")
            load_owner_secret(program, owner_weights)
            _check_calibration(config, program, owner_weights)
        return program
    shape = (spec.architecture, bucket.rows, spec.input_shape)
    if owner_weights is None:  # a zoo model converted in an earlier run (program_cache)
        kept = program_cache.load(*shape)
        if kept is not None:
            return kept
    try:
        model = zoo.build(spec.architecture)
    except ConfigError as exc:  # the zoo names the key; the user needs the file too
        raise ConfigError(f"{config.source}: {exc}") from None
    if owner_weights is not None:  # verified first when signed: a tampered model stops everything here
        model_dir.load_owner_weights(model, owner_weights, spec)
    program = convert(model, torch.zeros(bucket.rows, *spec.input_shape))
    if owner_weights is not None:
        _check_calibration(config, program, owner_weights)
    else:
        program_cache.store(*shape, program)
    return program


def _check_calibration(config: Any, program: Program, owner_weights: Path) -> None:
    # the owner refuses settings that do not cover what its model was calibrated to reach
    calibration = calibrate.load(owner_weights)
    if calibration is not None:
        calibrate.check(calibration, program, config.protocol.precision_bits, str(owner_weights / calibrate.FILE))


def load_rows(config: Any, program: Program, path: Path | None) -> artifacts.InputData:
    """A data owner's rows for `program`, every value checked (ids inside the vocabulary,
    masks 0/1) before anyone computes."""
    if path is None:  # the config's validation requires data of every data owner
        raise RuntimeError("load_rows: a data owner without data")
    if config.model.program is None:
        data = artifacts.load_data(path, config.model.input_shape)
        return artifacts.InputData({program.inputs[0].name: data.inputs}, data.labels)
    rows = artifacts.load_inputs(path, program.inputs)
    for spec in program.inputs:
        spec.check(rows.inputs[spec.name], str(path))
    return rows
