"""Packed model directories: any PyTorch module (a Hugging Face model included) becomes a
converted program plus the owner's weights, and every party builds the computation from
files alone.

A packed directory holds `program.json` and `constants.safetensors` (the architecture, as
data: smpc.model.program_format), `weights.safetensors` (the secret parameters, by graph
name: only the model owner needs this file) and `manifest.json`. It can be signed and
verified like any model directory (smpc.model_dir). Parties load the program: they need
neither the model's Python code nor the library it was written with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from smpc import artifacts, model_dir, zoo
from smpc.convert import Program, convert
from smpc.errors import ArtifactError, ConfigError
from smpc.model import program_format

PROGRAM_ARCHITECTURE = "program"  # the manifest's architecture for a packed program


def pack(model: torch.nn.Module, example_inputs: Any, out_dir: str | Path, example_kwargs: dict | None = None) -> Program:
    """Convert `model` for the shapes of `example_inputs` and write a packed model directory.

    Args:
        model: any PyTorch module (e.g. a Hugging Face model with attn_implementation="eager").
        example_inputs: a tensor or a tuple of tensors with the exact shapes, batch first;
            the batch size is part of the program (a config's batch_size must match it).
        out_dir: the directory to create (must not exist yet).
        example_kwargs: tensors passed by keyword (e.g. ``attention_mask``).

    Returns:
        The converted Program (with the real weights).
    """
    out = Path(out_dir)
    if out.exists():
        raise ArtifactError(f"{out}: already exists")
    program = convert(model, example_inputs, example_kwargs)
    out.mkdir(parents=True)
    program_format.save(program, out)
    save_file({k: v.contiguous() for k, v in program.secret.items()}, str(out / model_dir.WEIGHTS))
    manifest = {
        "format": model_dir.FORMAT,
        "version": model_dir.VERSION,
        "architecture": PROGRAM_ARCHITECTURE,
        "input_shape": [],
        "inputs": [{"name": s.name, "shape": list(s.shape), "kind": s.kind, "depth": s.depth} for s in program.inputs],
        "outputs": [{"name": n, "shape": list(shape)} for n, shape in program.outputs],
        "tensors": {k: list(v.shape) for k, v in sorted(program.secret.items())},
    }
    (out / model_dir.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return program


def batch_size(program: Program) -> int:
    """The batch size a program was converted for (the first dimension of its inputs)."""
    return program.inputs[0].shape[0]


def load_owner_secret(program: Program, weights: Path) -> None:
    """Replace the program's zero placeholders by the owner's weights (exact names and shapes)."""
    tensors = artifacts.read_fitting(model_dir.weights_file(weights), program.secret, "the program")
    program.secret.update({name: value.float() for name, value in tensors.items()})


def build_program(config: Any, owner_weights: Path | None = None, batch: int | None = None) -> Program:
    """The computation of `config`, as every party (and the dealer) builds it.

    Args:
        config: the run config (smpc.config.Config).
        owner_weights: the model owner's `weights` entry; None elsewhere (the parameters
            stay zero placeholders of the right shapes).
        batch: the batch size to convert for (a service runs several); default
            `config.batch_size`.

    Returns:
        The Program; a packed program comes from `model.program`, a zoo or
        ``module:factory`` architecture is built and converted here.
    """
    spec = config.model
    if spec.program is not None:
        program = program_format.load(spec.program)
        if batch_size(program) != config.batch_size:
            raise ConfigError(
                f"{config.source}: batch_size: the program in {spec.program} was packed for batch size "
                f"{batch_size(program)}, got {config.batch_size}"
            )
        if owner_weights is not None:
            if spec.public_key is not None and not owner_weights.is_dir():
                raise ArtifactError(
                    f"{owner_weights}: model.public_key is set, so the weights must be a signed model directory"
                )
            if spec.public_key is not None:  # verified before a single weight is read
                manifest = model_dir.verify(owner_weights, spec.public_key)
                if manifest.get("architecture") != PROGRAM_ARCHITECTURE:
                    raise ArtifactError(f"{owner_weights}: signed for architecture {manifest.get('architecture')!r}, not a packed program")
                signed = program_format.load(owner_weights)
                if signed.architecture_fingerprint() != program.architecture_fingerprint():
                    raise ArtifactError(f"{owner_weights}: the signed program differs from {spec.program}")
            load_owner_secret(program, owner_weights)
            _check_calibration(config, program, owner_weights)
        return program
    try:
        model = zoo.build(spec.architecture)
    except ConfigError as exc:  # the zoo names the key; the user needs the file too
        raise ConfigError(f"{config.source}: {exc}") from None
    if owner_weights is not None:  # verified first when signed: a tampered model stops everything here
        model_dir.load_owner_weights(model, owner_weights, spec)
    program = convert(model, torch.zeros(batch or config.batch_size, *spec.input_shape))
    if owner_weights is not None:
        _check_calibration(config, program, owner_weights)
    return program


def _check_calibration(config: Any, program: Program, owner_weights: Path) -> None:
    # the owner refuses settings that do not cover what its model was calibrated to reach
    from smpc.model import calibrate

    calibration = calibrate.load(owner_weights)
    if calibration is not None:
        calibrate.check(calibration, program, config.protocol.precision_bits, str(owner_weights / calibrate.FILE))


def load_rows(config: Any, program: Program, path: Path) -> artifacts.InputData:
    """A data owner's rows for `program`, every value checked (ids inside the vocabulary,
    masks 0/1) before anyone computes."""
    if config.model.program is None:
        data = artifacts.load_data(path, config.model.input_shape)
        return artifacts.InputData({program.inputs[0].name: data.inputs}, data.labels)
    rows = artifacts.load_inputs(path, program.inputs)
    for spec in program.inputs:
        spec.check(rows.inputs[spec.name], str(path))
    return rows
