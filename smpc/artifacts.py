"""Model weights and input data on disk: safetensors only, never pickles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smpc.errors import ArtifactError


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
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
    tensors = _read(path, "weights")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: weights do not fit the architecture (missing: {missing[:5]}, unexpected: {extra[:5]})")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise ArtifactError(
                f"{path}: {key}: expected shape {list(value.shape)}, got {list(tensors[key].shape)}"
            )
    model.load_state_dict(tensors)


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


def save_data(path: Path, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Write a data file in the format load_data reads."""
    tensors = {"inputs": inputs.float().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.long().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def save_outputs(path: Path, outputs: torch.Tensor) -> None:
    """Write revealed outputs (one row per sample) as safetensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"outputs": outputs.contiguous()}, str(path))


def load_outputs(path: Path) -> torch.Tensor:
    """Read outputs written by save_outputs."""
    tensors = _read(path, "outputs")
    if "outputs" not in tensors:
        raise ArtifactError(f"{path}: expected a tensor named 'outputs', found {sorted(tensors)}")
    return tensors["outputs"]
