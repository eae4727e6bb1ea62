"""Qwen3 (the small backbone) through mlx-lm, used as an encoder: hidden states, no lm_head."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import qwen3

from ...errors import JinalocError


class Model(qwen3.Model):
    """mlx-lm's Qwen3 returning the final-normed hidden states of the inner model."""

    @property
    def backbone(self) -> nn.Module:
        # Paths under model.model match the checkpoint and the PEFT keys (layers.N...).
        return self.model

    def __call__(self, ids: mx.array, mask: mx.array | None = None) -> mx.array:
        # Causal attention: with right padding no real token sees a pad, so no mask needed.
        return self.model(ids)

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        weights = {k.removeprefix("model."): v for k, v in weights.items()}
        weights.pop("lm_head.weight", None)  # embeddings only
        return {f"model.{k}": v for k, v in weights.items()}


def build(config: dict) -> Model:
    config = dict(config)
    # Tied means mlx-lm creates no lm_head, which an embedding model never uses.
    config["tie_word_embeddings"] = True
    try:
        config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
        config.setdefault("num_key_value_heads", config["num_attention_heads"])
        return Model(qwen3.ModelArgs.from_dict(config))
    except (KeyError, TypeError, ValueError) as e:
        raise JinalocError(f"config.json does not describe a Qwen3 model: {e}") from None
