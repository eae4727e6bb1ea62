"""The Python API: load a model once, embed texts for a task, prompt and dim."""

from __future__ import annotations

import importlib.util
import logging
import platform
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .backends.base import Backend
from .errors import JinalocError, check_choice
from .registry import TASKS, ModelSpec, resolve
from .textsafe import clean
from .vectors import check_dim, matryoshka

if TYPE_CHECKING:
    from .backends.api import APISettings

log = logging.getLogger("jinaloc")

# "api": an embeddings server (backends/api.py); never chosen by "auto".
BACKENDS = ("auto", "mlx", "gguf", "onnx", "api")
PROMPTS = ("query", "document")
# Padded tokens per forward pass: bounds memory for long inputs.
MAX_BATCH_TOKENS = 16384

ProgressFn = Callable[[int, int], None]  # (texts done in this step, tokens in this step)


def default_backend(quant: str | None = None) -> str:
    """MLX on Apple Silicon (Metal). On x86_64 Linux and Windows, ONNX Runtime int8 when it is
    installed and no GGUF quant was asked for: measured 1.2-3.2x the speed of llama.cpp's
    fastest quant there at cosine 0.9975 to fp32 (docs/benchmarks.md). GGUF elsewhere."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mlx" if importlib.util.find_spec("mlx") else "gguf"
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and sys.platform in ("linux", "win32") and (quant is None or is_onnx_quant(quant)):
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            return "onnx"
    return "gguf"


def is_onnx_quant(quant: str) -> bool:
    from .backends import ONNX_QUANTS

    return quant.lower() in ONNX_QUANTS


@dataclass
class Embedding:
    vectors: np.ndarray  # float32 (n, dim), L2-normalized
    token_counts: list[int]  # tokens actually embedded per text (after truncation)


class Embedder:
    """One loaded model. Switching task or dim does not reload the base weights."""

    # Embed calls that may run at once: a local model runs one forward pass at a time; a
    # server backend keeps several requests in flight.
    in_flight = 1

    def __init__(self, spec: ModelSpec, backend: Backend):
        self.spec = spec
        self.backend = backend

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hidden_size(self) -> int:
        return self.backend.hidden_size

    @property
    def max_tokens(self) -> int:
        return self.backend.max_tokens

    @property
    def quant(self) -> str:
        return self.backend.quant

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
        prefix = self.prefix(prompt)
        # Lone surrogates (a query from argv or JSON) as U+FFFD: no tokenizer takes them.
        return self.backend.tokenize([prefix + clean(t) for t in texts])

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
    ) -> Future[Embedding]:
        """`embed_with_counts` as a future: a local model has finished when this returns;
        a server backend returns at once and embeds meanwhile (`in_flight` calls at most)."""
        future: Future[Embedding] = Future()
        try:
            future.set_result(self.embed_with_counts(texts, task, prompt, dim, truncated=truncated))
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


def load_embedder(
    model: str | None = None,
    backend: str = "auto",
    quant: str | None = None,
    offline: bool = False,
    download: bool = True,
    dim: int | None = None,
    task: str | None = None,
    api: APISettings | None = None,
) -> Embedder:
    """Load a registry model or local folder on the chosen backend.

    `offline` never touches the network; `download=False` also refuses to fetch. A `dim`
    is checked against the registry before anything is loaded or downloaded. `task`, the
    adapter used first, saves fetching another task's GGUF just for its tokenizer.
    backend "api" embeds through the server `api` names (default: JINALOC_API_* variables),
    with only the model's tokenizer here; `offline` then still lets texts go to it."""
    from .backends import open_backend

    check_choice("backend", backend, BACKENDS)
    spec = resolve(model)
    if spec.kind != "embedding":
        raise JinalocError(
            f"{spec.name} is a {spec.kind}, not an embedding model: use it with"
            f" `jinaloc rerank --cross --reranker {spec.name}`"
        )
    if dim is not None and spec.dims and spec.path is None:
        check_dim(dim, spec.dims, spec.allowed_dims())
    if backend == "auto":
        backend = default_backend(quant)
    if task is not None:
        check_task(task, spec.tasks)
    if backend == "api":
        from .backends.api import open_api

        return open_api(spec, api, offline=offline)
    opened = open_backend(spec, backend, quant, offline=offline, download=download, task=task)
    return Embedder(spec, opened)
