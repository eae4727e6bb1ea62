"""Which runtime serves a model here, and loading it: a local backend (MLX, ONNX Runtime,
GGUF) or an embeddings server (`--backend api`)."""

from __future__ import annotations

import importlib.util
import platform
import sys
from typing import TYPE_CHECKING

from .errors import JinalocError, check_choice
from .registry import resolve

if TYPE_CHECKING:
    from .backends.api import APISettings
    from .embedder import BaseEmbedder

# "api": an embeddings server (backends/api.py); never chosen by "auto".
BACKENDS = ("auto", "mlx", "gguf", "onnx", "api")


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
    from .backends.quants import ONNX_QUANTS

    return quant.lower() in ONNX_QUANTS


def load_embedder(
    model: str | None = None,
    backend: str = "auto",
    quant: str | None = None,
    offline: bool = False,
    download: bool = True,
    dim: int | None = None,
    task: str | None = None,
    api: APISettings | None = None,
) -> BaseEmbedder:
    """Load a registry model or local folder on the chosen backend.

    `offline` never touches the network; `download=False` also refuses to fetch. A `dim`
    is checked against the registry before anything is loaded or downloaded. `task`, the
    adapter used first, saves fetching another task's GGUF just for its tokenizer.
    backend "api" embeds through the server `api` names (default: JINALOC_API_* variables),
    with only the model's tokenizer here; `offline` then still lets texts go to it."""
    # Here, not at the top: `default_backend` (asked by every search) needs no numpy.
    from .backends import open_backend
    from .embedder import Embedder, check_task
    from .vectors import check_dim

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
