"""The Python API: load a model once, embed texts for a task, prompt and dim."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .backends.base import Backend
from .errors import JinalocError, check_choice
from .registry import TASKS, ModelSpec
from .textsafe import clean
from .vectors import check_dim, matryoshka

log = logging.getLogger("jinaloc")

PROMPTS = ("query", "document")
# Padded tokens per forward pass: bounds memory for long inputs.
MAX_BATCH_TOKENS = 16384

ProgressFn = Callable[[int, int], None]  # (texts done in this step, tokens in this step)


@dataclass
class Embedding:
    vectors: np.ndarray  # float32 (n, dim), L2-normalized
    token_counts: list[int]  # tokens actually embedded per text (after truncation)


class Embeds(Protocol):
    """What the index, the pipelines and the servers use of a model. The local `Embedder`,
    the server client (`server.client.RemoteEmbedder`), the api backend and the tests'
    pure-numpy embedder satisfy it."""

    spec: ModelSpec
    # Embed calls that may run at once: 1 for a local model; a server keeps several busy.
    in_flight: int

    @property
    def name(self) -> str: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def quant(self) -> str: ...
    @property
    def backend_name(self) -> str: ...
    def check_dim(self, dim: int | None) -> int: ...
    def count_tokens(self, texts: Sequence[str], prompt: str = "document") -> list[int]: ...
    def embed(
        self,
        texts: Sequence[str],
        task: str = ...,
        prompt: str = ...,
        dim: int | None = ...,
        batch_size: int = ...,
        progress: ProgressFn | None = ...,
        truncated: list[tuple[int, int]] | None = ...,
    ) -> np.ndarray: ...
    def embed_with_counts(
        self,
        texts: Sequence[str],
        task: str = ...,
        prompt: str = ...,
        dim: int | None = ...,
        batch_size: int = ...,
        progress: ProgressFn | None = ...,
        truncated: list[tuple[int, int]] | None = ...,
    ) -> Embedding: ...
    def embed_later(
        self,
        texts: Sequence[str],
        task: str = ...,
        prompt: str = ...,
        dim: int | None = ...,
        truncated: list[tuple[int, int]] | None = ...,
        progress: ProgressFn | None = ...,
    ) -> Future[Embedding]: ...
    def close(self) -> None: ...


class BaseEmbedder:
    """What every embedder shares above its raw vectors: prompts, dims, Matryoshka slicing
    and normalization, futures. A subclass gives `embed_raw`, `count_tokens` and the
    model's sizes."""

    in_flight = 1
    hidden_size: int
    max_tokens: int
    quant: str
    backend_name: str

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def check_dim(self, dim: int | None) -> int:
        allowed = self.spec.allowed_dims()
        # Fixture-sized or user folders may be smaller than the registry's trained dims.
        if allowed and max(allowed) > self.hidden_size:
            allowed = None
        return check_dim(dim, self.hidden_size, allowed)

    def prefix(self, prompt: str) -> str:
        check_prompt(prompt)
        return self.spec.prompts.get(prompt, "")

    def tokenize(self, texts: Sequence[str], prompt: str = "document"):
        """(token ids, counts before the model's cut) of the texts with the prompt's prefix."""
        prefix = self.prefix(prompt)
        # Lone surrogates (a query from argv or JSON) as U+FFFD: no tokenizer takes them.
        return self._tokenize([prefix + clean(t) for t in texts])

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """The model's tokenizer on finished texts; a subclass that has one here gives it."""
        raise NotImplementedError

    def count_tokens(self, texts: Sequence[str], prompt: str = "document") -> list[int]:
        """Tokens each text would use, prompt and special tokens included, before truncation."""
        return self.tokenize(texts, prompt)[1]

    def embed(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        prompt: str = "document",
        dim: int | None = None,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list[tuple[int, int]] | None = None,
    ) -> np.ndarray:
        """float32 (n, dim), L2-normalized, in input order."""
        return self.embed_with_counts(
            texts, task, prompt, dim, batch_size, progress, truncated
        ).vectors

    def embed_with_counts(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        prompt: str = "document",
        dim: int | None = None,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list[tuple[int, int]] | None = None,
    ) -> Embedding:
        check_task(task, self.spec.tasks)
        dim = self.check_dim(dim)
        if batch_size < 1:
            raise JinalocError("batch size must be at least 1")
        pooled, counts = self.embed_raw(texts, task, prompt, batch_size, progress, truncated)
        return Embedding(matryoshka(pooled, dim), counts)

    def embed_later(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        prompt: str = "document",
        dim: int | None = None,
        truncated: list[tuple[int, int]] | None = None,
        progress: ProgressFn | None = None,
    ) -> Future[Embedding]:
        """`embed_with_counts` as a future: a local model has finished when this returns;
        a server backend returns at once and embeds meanwhile (`in_flight` calls at most)."""
        future: Future[Embedding] = Future()
        try:
            future.set_result(
                self.embed_with_counts(
                    texts, task, prompt, dim, progress=progress, truncated=truncated
                )
            )
        except Exception as e:
            future.set_exception(e)
        return future

    def embed_raw(
        self,
        texts: Sequence[str],
        task: str,
        prompt: str,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list[tuple[int, int]] | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        """Raw pooled vectors (full dim, unnormalized) and per-text token counts.

        Inputs longer than the model's limit are truncated, with a warning; a caller that
        reports them itself (once for a whole run) passes `truncated`, which collects
        (input index, tokens before truncation) instead."""
        raise NotImplementedError

    def close(self) -> None:
        """Free what the model holds."""


class Embedder(BaseEmbedder):
    """One model loaded here on a local backend. Switching task or dim does not reload the
    base weights."""

    def __init__(self, spec: ModelSpec, backend: Backend):
        super().__init__(spec)
        self.backend = backend

    @property
    def hidden_size(self) -> int:
        return self.backend.hidden_size

    @property
    def max_tokens(self) -> int:
        return self.backend.max_tokens

    @property
    def quant(self) -> str:
        return self.backend.quant

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        return self.backend.tokenize(texts)

    def embed_raw(
        self,
        texts: Sequence[str],
        task: str,
        prompt: str,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list[tuple[int, int]] | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.hidden_size), np.float32), []
        ids, full_lengths = self.tokenize(texts, prompt)
        note_truncated(full_lengths, self.max_tokens, truncated)
        out = np.zeros((len(texts), self.hidden_size), np.float32)
        for batch in length_sorted_batches([len(x) for x in ids], batch_size, MAX_BATCH_TOKENS):
            out[batch] = self.backend.embed_tokens([ids[i] for i in batch], task)
            if progress:
                progress(len(batch), sum(len(ids[i]) for i in batch))
        return out, [len(x) for x in ids]

    def close(self) -> None:
        self.backend.close()


def note_truncated(
    full_lengths: Sequence[int], max_tokens: int, collect: list | None = None
) -> None:
    """Inputs longer than the model's context (they are cut): appended to `collect` as
    (input index, tokens) for a caller that reports them once, else one warning now."""
    cut = [(i, n) for i, n in enumerate(full_lengths) if n > max_tokens]
    if collect is not None:
        collect += cut
    elif cut:
        log.warning(
            "%d input(s) longer than %d tokens were truncated (longest: %d tokens)",
            len(cut),
            max_tokens,
            max(n for _, n in cut),
        )


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length (less padding), each batch within both budgets."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first, so the batch's padded width is its first element's length.
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or width * (len(current) + 1) > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def check_task(task: str, tasks: Sequence[str] = TASKS) -> str:
    return check_choice("task", task, tasks)


def check_prompt(prompt: str) -> str:
    return check_choice("prompt", prompt, PROMPTS)
