"""Scoring texts against fixed anchor texts: a rerank query, or classification labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..embedder import Embeds, ProgressFn


class AnchorScorer:
    """Embeds the anchors once; `scores` gives the cosine of each text to each anchor.

    Texts always take the document prompt; `anchor_prompt` is "query" for a retrieval query
    and "document" for the symmetric tasks (Jina's recipe)."""

    def __init__(
        self,
        embedder: Embeds,
        anchors: Sequence[str],
        task: str,
        anchor_prompt: str = "document",
        dim: int | None = None,
        batch_size: int = 32,
    ):
        self.embedder = embedder
        self.task = task
        self.dim = dim
        self.batch_size = batch_size
        self.anchors = embedder.embed(anchors, task, anchor_prompt, dim, batch_size)

    def embed(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        return self.embedder.embed(
            texts, self.task, "document", self.dim, self.batch_size, progress
        )

    def scores(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """float32 (len(texts), len(anchors))."""
        return self.embed(texts, progress) @ self.anchors.T
