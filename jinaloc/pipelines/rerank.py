"""Reranking texts by relevance to a query with the retrieval adapter."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..embedder import Embeds
from .score import AnchorScorer


def query_scorer(
    embedder: Embeds, query: str, dim: int | None = None, batch_size: int = 32
) -> AnchorScorer:
    """Retrieval adapter: query prompt for the query, document prompt for the texts."""
    return AnchorScorer(embedder, [query], "retrieval", "query", dim, batch_size)


class TopK:
    """The best `k` (or all, k=None) items pushed so far that reach `min_score`.

    Holds at most k items, so a stream of any length can be reranked in bounded memory.
    Equal scores keep their input order."""

    def __init__(self, k: int | None = None, min_score: float | None = None):
        self.k = k
        self.min_score = min_score
        self._heap: list[tuple[float, int, Any]] = []  # (score, -seq, item): worst at [0]
        self._seq = 0

    def push(self, scores: np.ndarray, items: Sequence[Any]) -> None:
        for score, item in zip(np.asarray(scores, dtype=float).tolist(), items, strict=True):
            self._seq += 1
            if self.min_score is not None and score < self.min_score:
                continue
            entry = (score, -self._seq, item)
            if self.k is None or len(self._heap) < self.k:
                heapq.heappush(self._heap, entry)
            elif entry > self._heap[0]:
                heapq.heapreplace(self._heap, entry)

    def __len__(self) -> int:
        return len(self._heap)

    def results(self) -> list[tuple[float, Any]]:
        """(score, item), best first."""
        return [(score, item) for score, _, item in sorted(self._heap, reverse=True)]


def cut_to_tokens(text: str, limit: int, count: Callable[[str], int]) -> str:
    """The longest prefix of `text` that `count` (a tokenizer's length) puts at `limit`
    tokens or fewer: a document cut as Jina's `max_doc_length` cuts it, on any backend."""
    if count(text) <= limit:
        return text
    lo, hi = 0, len(text)  # count(text[:lo]) <= limit < count(text[:hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(text[:mid]) <= limit else (lo, mid)
    return text[:lo]


def rerank(
    embedder: Embeds,
    query: str,
    texts: Sequence[str],
    k: int | None = None,
    min_score: float | None = None,
    dim: int | None = None,
    batch_size: int = 32,
) -> list[tuple[int, float]]:
    """(index into texts, score), most relevant first."""
    top = TopK(k, min_score)
    top.push(query_scorer(embedder, query, dim, batch_size).scores(texts)[:, 0], range(len(texts)))
    return [(i, score) for score, i in top.results()]
