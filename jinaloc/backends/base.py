"""The small interface every backend implements; pooling and prompts live above it."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """Runs one model family on one runtime and returns raw last-token hidden states."""

    name: str  # "mlx" | "gguf"
    hidden_size: int
    max_tokens: int
    # The weights' quantization, as an index records it ("default": the format's own).
    quant: str = "default"

    @abstractmethod
    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids with the model's special tokens, truncated to `max_tokens` (special
        tokens kept), and each text's token count before truncation."""

    @abstractmethod
    def embed_tokens(self, batch: list[list[int]], task: str) -> np.ndarray:
        """Raw pooled hidden state of the last token of each sequence: float32 (n, hidden),
        neither truncated nor normalized."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free runtime resources."""
