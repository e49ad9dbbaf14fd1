"""A model owner's steps on a model directory, combining the formats of this package:
pack a Hugging Face `save_pretrained` folder into a program directory, and calibrate a
directory on sample rows. The command table (`smpc model pack|calibrate`) calls these."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from smpc import artifacts
from smpc.errors import ArtifactError
from smpc.model import calibrate, huggingface, model_dir, pack, program_format, zoo
from smpc.model.convert import convert


def pack_pretrained(source: Path, out: Path, batch: int, seq_len: int) -> pack.Layout:
    """Pack a local `save_pretrained` folder for every batch up to `batch` rows and every
    length up to `seq_len` tokens into `out` (its fast tokenizer, when saved beside the
    model, travels with the program).

    Returns the layout written."""
    if batch < 1 or seq_len < 1:
        raise ArtifactError(f"--batch and --seq-len: expected positive integers, got {batch} and {seq_len}")
    model = huggingface.load_pretrained(source)
    example, kwargs = huggingface.example_inputs(model, batch, seq_len)
    tokenizer = source / pack.TOKENIZER
    pack.pack(model, example, out, kwargs, tokenizer=tokenizer if tokenizer.is_file() else None)
    return pack.layout(out)


def calibrate_directory(
    directory: Path, data: Path, margin: float = calibrate.DEFAULT_MARGIN
) -> tuple[calibrate.Calibration, Path]:
    """`smpc model calibrate`: the owner's model directory (a packed program, or a zoo
    model directory) run on the sample rows in `data`; writes calibration.json there.

    Returns the calibration and the file written."""
    directory, data = Path(directory), Path(data)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: model directory not found")
    if not data.is_file():
        raise ArtifactError(f"{data}: sample data file not found")
    if (directory / program_format.GRAPH_FILE).is_file():
        program = program_format.load(directory)
        pack.load_owner_secret(program, directory)
        batch = pack.batch_size(program)
        inputs, architecture = artifacts.load_inputs(data, program.inputs).inputs, "packed program"
    else:
        manifest_path = directory / model_dir.MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{directory}: not a model directory (no {model_dir.MANIFEST} or {program_format.GRAPH_FILE})"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            architecture, shape = str(manifest["architecture"]), tuple(int(v) for v in manifest["input_shape"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{manifest_path}: not a model manifest ({exc})") from None
        model = zoo.build(architecture)
        artifacts.load_weights(model, directory / model_dir.WEIGHTS)
        dataset = artifacts.load_data(data, shape)
        batch = min(64, len(dataset.inputs))
        program = convert(model, torch.zeros(batch, *shape))
        inputs = {program.inputs[0].name: dataset.inputs}
    count = len(next(iter(inputs.values())))
    if count == 0:
        raise ArtifactError(f"{data}: no sample rows")
    batches = []
    for start in range(0, count, batch):
        feeds = {}
        for spec in program.inputs:
            part = spec.encode(inputs[spec.name][start : start + batch], str(data))
            if len(part) < batch:  # a short last batch repeats its last row (ranges unchanged)
                part = torch.cat([part, part[-1:].expand(batch - len(part), *part.shape[1:])])
            feeds[spec.name] = part
        batches.append(feeds)
    # the sample's own rows (observe also counts the repeated rows of a short last batch)
    calibration = dataclasses.replace(calibrate.observe(program, batches, margin, architecture), rows=count)
    return calibration, calibrate.save(calibration, directory)
