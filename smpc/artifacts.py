"""Model weights and input data on disk: safetensors only, never pickles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smpc.errors import ArtifactError


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; expected a safetensors {what} file")
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors {what} file ({exc})") from None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (the model fingerprint in audit logs)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict into `model`, requiring exactly its keys and shapes.

    Args:
        model: the architecture, built locally.
        path: the weights file.
    """
    model.load_state_dict(read_fitting(path, model.state_dict(), "the architecture"))


def read_fitting(path: Path, expected: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The weights in `path`, required to have exactly the keys and shapes of `expected`
    (one ArtifactError line naming the file, and the key or the missing ones, otherwise)."""
    tensors = _read(path, "weights")
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: weights do not fit {what} (missing: {missing[:5]}, unexpected: {extra[:5]})")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise ArtifactError(f"{path}: {key}: expected shape {list(value.shape)}, got {list(tensors[key].shape)}")
    return tensors


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write `model`'s state dict as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


@dataclass(frozen=True)
class Dataset:
    """Inputs (float32, N x input_shape) and optional integer labels (N)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None


def load_data(path: Path, input_shape: tuple[int, ...]) -> Dataset:
    """Read a data file holding `inputs` and optionally `labels`, checking shapes.

    Args:
        path: safetensors file.
        input_shape: the per-sample shape the model takes (model.input_shape).
    """
    tensors = _read(path, "data")
    if "inputs" not in tensors:
        raise ArtifactError(f"{path}: expected a tensor named 'inputs', found {sorted(tensors)}")
    inputs = tensors["inputs"]
    if tuple(inputs.shape[1:]) != tuple(input_shape) or inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ArtifactError(
            f"{path}: inputs have shape {list(inputs.shape)}, expected [N, {', '.join(map(str, input_shape))}] "
            f"(model.input_shape is {list(input_shape)})"
        )
    labels = tensors.get("labels")
    if labels is not None and tuple(labels.shape) != (inputs.shape[0],):
        raise ArtifactError(f"{path}: labels have shape {list(labels.shape)}, expected [{inputs.shape[0]}]")
    return Dataset(inputs.float(), None if labels is None else labels.long())


@dataclass(frozen=True)
class InputData:
    """A data owner's rows for a packed program: each model input by name (raw values:
    floats, integer ids, 0/1 masks), N rows each, and optional integer labels."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


def load_inputs(path: Path, specs: Any) -> InputData:
    """Read a data file for a program's inputs: one tensor per input name (a single float
    input may also be called `inputs`), each [N, *that input's shape without the batch].

    Args:
        path: safetensors file.
        specs: the program's InputSpecs.
    """
    tensors = _read(path, "data")
    if len(specs) == 1 and specs[0].name not in tensors and "inputs" in tensors:
        tensors[specs[0].name] = tensors.pop("inputs")
    missing = [s.name for s in specs if s.name not in tensors]
    if missing:
        raise ArtifactError(
            f"{path}: expected a tensor for each model input {[s.name for s in specs]}, missing {missing}"
        )
    inputs, rows = {}, None
    for spec in specs:
        value = tensors[spec.name]
        sample = tuple(spec.shape[1:])
        if value.dim() != len(sample) + 1 or tuple(value.shape[1:]) != sample or value.shape[0] == 0:
            raise ArtifactError(
                f"{path}: {spec.name} has shape {list(value.shape)}, expected [N, {', '.join(map(str, sample))}]"
            )
        if rows is not None and value.shape[0] != rows:
            raise ArtifactError(f"{path}: {spec.name} has {value.shape[0]} rows, the other inputs {rows}")
        rows = value.shape[0]
        inputs[spec.name] = value
    labels = tensors.get("labels")
    if labels is not None and tuple(labels.shape) != (rows,):
        raise ArtifactError(f"{path}: labels have shape {list(labels.shape)}, expected [{rows}]")
    return InputData(inputs, None if labels is None else labels.long())


def save_inputs(path: Path, inputs: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> None:
    """Write a data file in the format load_inputs reads."""
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    if labels is not None:
        tensors["labels"] = labels.long().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def save_data(path: Path, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Write a data file in the format load_data reads."""
    tensors = {"inputs": inputs.float().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.long().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def save_outputs(path: Path, outputs: torch.Tensor | dict[str, torch.Tensor]) -> None:
    """Write revealed outputs (one row per sample) as safetensors: one tensor `outputs`,
    or one tensor per output name of a packed program."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = outputs if isinstance(outputs, dict) else {"outputs": outputs}
    save_file({k: v.contiguous() for k, v in fields.items()}, str(path))


def load_output_fields(path: Path) -> dict[str, torch.Tensor]:
    """Every output tensor save_outputs wrote, by name."""
    return _read(path, "outputs")


def load_outputs(path: Path) -> torch.Tensor:
    """Read outputs written by save_outputs."""
    tensors = _read(path, "outputs")
    if "outputs" not in tensors:
        raise ArtifactError(f"{path}: expected a tensor named 'outputs', found {sorted(tensors)}")
    return tensors["outputs"]
