"""Hugging Face architectures as users bring them (small configs, random weights, no
download), with the inputs each takes and the fidelity each must reach on shares."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import torch

SMALL = dict(
    vocab_size=400,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=32,
    attn_implementation="eager",
)


def realistic_bert_scaling(model: torch.nn.Module) -> torch.nn.Module:
    """Scale random weights the way real checkpoints are: small word embeddings (a row
    variance near 1e-3 before the first LayerNorm) and feed-forward pre-activations in the
    tens, far outside the range CrypTen's own GELU and LayerNorm survive."""
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(0.05)
        for layer in model.encoder.layer:
            layer.intermediate.dense.weight.mul_(60)
    return model


def text_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of 3 sequences of 12 ids and its attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 400, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _bert():
    from transformers import BertConfig, BertModel

    return realistic_bert_scaling(BertModel(BertConfig(**SMALL)))


def _bert_cls():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(**SMALL, num_labels=3))
    realistic_bert_scaling(model.bert)
    return model


def _roberta():
    from transformers import RobertaConfig, RobertaModel

    # position ids count the non-padding tokens of the secret input_ids (padding id 1)
    return realistic_bert_scaling(RobertaModel(RobertaConfig(**SMALL, pad_token_id=1)))


def _roberta_text(model):
    ids, mask = text_inputs()
    ids[mask == 0] = 1  # RoBERTa's tokenizer pads with id 1
    ids[mask == 1] = ids[mask == 1].clamp(min=3)
    return (ids,), {"attention_mask": mask}


def _distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    return DistilBertModel(
        DistilBertConfig(
            vocab_size=400,
            dim=64,
            n_layers=2,
            n_heads=4,
            hidden_dim=128,
            max_position_embeddings=32,
            attn_implementation="eager",
        )
    )


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(
        GPT2Config(
            vocab_size=400,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=32,
            attn_implementation="eager",
            use_cache=False,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def _vit():
    from transformers import ViTConfig, ViTModel

    return ViTModel(
        ViTConfig(
            image_size=16,
            patch_size=4,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            attn_implementation="eager",
        )
    )


def _llama():
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(**SMALL | dict(num_key_value_heads=2, use_cache=False)))


def _text(model):
    ids, mask = text_inputs()
    return (ids,), {"attention_mask": mask}


def _image(model):
    return (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)),), {}


# name -> (model factory, inputs builder, minimum cosine to plaintext on every unmasked token)
ARCHITECTURES: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[Any], tuple], float]] = {
    "BertModel": (_bert, _text, 0.999),
    "BertForSequenceClassification": (_bert_cls, _text, 0.999),
    "DistilBertModel": (_distilbert, _text, 0.999),
    "RobertaModel": (_roberta, _roberta_text, 0.999),
    "GPT2Model": (_gpt2, _text, 0.999),
    "ViTModel": (_vit, _image, 0.999),
    "LlamaModel": (_llama, _text, 0.999),
}


def build(name: str) -> tuple[torch.nn.Module, tuple, dict]:
    """The model (eval mode, same weights in every process) and its example inputs."""
    factory, inputs, _ = ARCHITECTURES[name]
    torch.manual_seed(sum(map(ord, name)))
    model = factory().eval()
    args, kwargs = inputs(model)
    return model, args, kwargs


def token_mask(name: str, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
    """Which rows of `output` are real tokens (padding rows carry no meaning)."""
    mask = kwargs.get("attention_mask")
    if mask is None or output.dim() < 3:
        return torch.ones(output.shape[:-1], dtype=torch.bool)
    return mask.bool()


def worst_cosine(name: str, kwargs: dict, got: torch.Tensor, want: torch.Tensor) -> float:
    """The smallest cosine similarity over the unmasked rows (last axis = features)."""
    keep = token_mask(name, kwargs, want)
    cos = torch.nn.functional.cosine_similarity(got.double(), want.double(), dim=-1)
    return float(cos[keep].min())
