"""Hugging Face models from a local `save_pretrained` directory (nothing is downloaded),
with the example inputs a packed program is converted for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smpc.errors import ArtifactError

# the architecture named in config.json -> the Auto class that builds it; anything else is
# built as the bare model (AutoModel)
_HEADS = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForImageClassification": "AutoModelForImageClassification",
}


def is_pretrained_dir(path: Path) -> bool:
    """True for a directory that holds a config.json (a save_pretrained folder)."""
    return path.is_dir() and (path / "config.json").is_file()


def load_pretrained(directory: Path) -> torch.nn.Module:
    """The model saved in `directory`, in eval mode, with eager attention and no cache.

    Raises ArtifactError naming the directory and the missing or unsafe file.
    """
    if not (directory / "config.json").is_file():
        raise ArtifactError(f"{directory}: not a save_pretrained directory (no config.json)")
    if not any(directory.glob("*.safetensors")):
        pickled = [p.name for p in directory.glob("*.bin")]
        if pickled:
            raise ArtifactError(
                f"{directory}: only pickled weights ({pickled[0]}); save them with save_pretrained(..., "
                "safe_serialization=True): pickles are never loaded"
            )
        raise ArtifactError(f"{directory}: no model.safetensors (the weights of a save_pretrained directory)")
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory}/config.json: cannot be read ({' '.join(str(exc).split())[:200]})") from None
    named = (getattr(config, "architectures", None) or [""])[0]
    auto = next((cls for suffix, cls in _HEADS.items() if named.endswith(suffix)), "AutoModel")
    loader = {
        "AutoModel": transformers.AutoModel,
        "AutoModelForSequenceClassification": transformers.AutoModelForSequenceClassification,
        "AutoModelForTokenClassification": transformers.AutoModelForTokenClassification,
        "AutoModelForImageClassification": transformers.AutoModelForImageClassification,
    }[auto]
    try:
        model = loader.from_pretrained(
            directory, local_files_only=True, attn_implementation="eager", use_safetensors=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{directory}: cannot load the model ({' '.join(str(exc).split())[:200]})") from None
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    module: torch.nn.Module = model.eval()
    return module


def example_inputs(model: torch.nn.Module, batch: int, seq_len: int) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Inputs of the shapes to convert for: images for vision models, else token ids
    with an attention mask."""
    config: Any = model.config  # a transformers PretrainedConfig
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return (torch.zeros(batch, config.num_channels, size, size),), {}
    return (torch.zeros(batch, seq_len, dtype=torch.long),), {
        "attention_mask": torch.ones(batch, seq_len, dtype=torch.long)
    }
