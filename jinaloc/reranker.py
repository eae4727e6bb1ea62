"""The cross-encoder API: a Qwen3-Reranker scores (query, document) pairs by the model card's
recipe, the relevance being P("yes") against "no" at the last position of the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .defaults import DOC_TOKENS
from .embedder import ProgressFn
from .errors import JinalocError
from .registry import ModelSpec, load_registry
from .textsafe import clean

# The model card's prompt (Qwen/Qwen3-Reranker-0.6B), token for token.
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query"
    ' and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = (
    "Given a search query, retrieve relevant passages from personal notes that answer the query"
)


def content(query: str, document: str, instruction: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Reranker:
    """One loaded cross-encoder: `backend` is a GGUFReranker (llama.cpp) or an ONNXReranker
    (ONNX Runtime); both tokenize, detokenize and score token sequences."""

    def __init__(self, spec: ModelSpec, backend, doc_tokens: int = DOC_TOKENS):
        self.spec = spec
        self.backend = backend
        if doc_tokens < 1:
            raise JinalocError("the document token budget must be at least 1")
        self.doc_tokens = doc_tokens

    @property
    def name(self) -> str:
        return self.spec.name

    def trim(self, document: str) -> str:
        """The document cut to `doc_tokens` tokens (unchanged when it fits)."""
        ids = self.backend.tokenize(document)
        return (
            document
            if len(ids) <= self.doc_tokens
            else self.backend.detokenize(ids[: self.doc_tokens])
        )

    def prompt_ids(self, query: str, documents: Sequence[str], instruction: str | None = None):
        """Token ids of each pair's prompt: prefix + content + suffix, each tokenized alone
        as the card does; content past the model's context is cut, like the card's
        truncation."""
        b = self.backend
        prefix, suffix = b.tokenize(PREFIX), b.tokenize(SUFFIX)
        room = b.max_tokens - len(prefix) - len(suffix)
        if instruction is None:
            instruction = DEFAULT_INSTRUCTION
        query, instruction = clean(query), clean(instruction)  # as the embedder does
        return [
            prefix + b.tokenize(content(query, self.trim(clean(d)), instruction))[:room] + suffix
            for d in documents
        ]

    def score(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Relevance in [0, 1] of each document to the query (float64, input order).
        `instruction` None: DEFAULT_INSTRUCTION (note search)."""
        documents = list(documents)
        if not documents:
            return np.zeros(0)
        return self.backend.score_tokens(self.prompt_ids(query, documents, instruction), progress)

    def close(self) -> None:
        self.backend.close()


def resolve_reranker(name_or_path: str | None = None) -> tuple[ModelSpec, Path | None]:
    """A registry reranker (the default one for None; path None), or a local .gguf file or
    folder holding a reranker's safetensors (config.json, model.safetensors, tokenizer.json)
    and its path."""
    registry = load_registry()
    if name_or_path is None:
        if not registry.default_reranker:
            raise JinalocError("no default reranker in models.toml: pass --reranker")
        name_or_path = registry.default_reranker
    if name_or_path in registry.models:
        spec = registry.models[name_or_path]
        if spec.kind != "reranker":
            raise JinalocError(f"{name_or_path} is an embedding model, not a reranker")
        return spec, None
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise JinalocError(f"reranker GGUF not found: {name_or_path}")
        return ModelSpec(name=path.stem, kind="reranker", path=path), path
    if (path / "config.json").is_file():
        return ModelSpec(name=path.name, kind="reranker", path=path.resolve()), path.resolve()
    known = [n for n, s in registry.models.items() if s.kind == "reranker"]
    raise JinalocError(
        f"unknown reranker {name_or_path!r}: known rerankers are {', '.join(known) or 'none'}"
        " (or pass a .gguf file or a folder with its safetensors)"
    )


def reranker_backend(spec: ModelSpec, backend: str, quant: str | None) -> str:
    """The runtime, onnx or gguf. auto: a local .gguf (or a folder of GGUFs only) runs on
    llama.cpp, a folder of safetensors on ONNX Runtime; a registry reranker on this machine's
    default backend (ONNX Runtime on x86_64 Linux and Windows; GGUF elsewhere, and for GGUF
    quants), or on ONNX Runtime where llama.cpp is not installed but it is (Apple Silicon
    with the onnx extra)."""
    import importlib.util

    from .load import default_backend

    if backend in ("onnx", "gguf"):
        return backend
    if backend not in ("auto", None):
        raise JinalocError(f"no {backend} reranker: choose --backend onnx, gguf or auto")
    path = spec.path
    if path is not None:
        if path.is_file() or not (path / "model.safetensors").is_file():
            return "gguf"
        return "onnx"
    if default_backend(quant) == "onnx":
        return "onnx"
    if importlib.util.find_spec("llama_cpp") is None and importlib.util.find_spec("onnxruntime"):
        return "onnx"
    return "gguf"


def load_reranker(
    name_or_path: str | None = None,
    quant: str | None = None,
    offline: bool = False,
    threads: int | None = None,
    download: bool = True,
    doc_tokens: int = DOC_TOKENS,
    backend: str = "auto",
) -> Reranker:
    """Load a registry reranker (downloading its files unless offline), a local .gguf or a
    local folder of safetensors, on ONNX Runtime or llama.cpp (`backend`, reranker_backend)."""
    from . import hub

    spec, path = resolve_reranker(name_or_path)
    chosen = reranker_backend(spec, backend, quant)
    if chosen == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise JinalocError(
                "the ONNX reranker is not installed: pip install 'jinaloc[onnx]'"
                " (or use --backend gguf)"
            ) from None
        if spec.path is not None and spec.path.is_file():
            raise JinalocError(
                f"{spec.path.name} is a GGUF file: the ONNX backend reads the reranker's"
                " safetensors (use --backend gguf)"
            )
        folder = hub.mlx_dir(spec, offline=offline, download=download)
        from .backends.onnx.rerank import ONNXReranker

        return Reranker(
            spec, ONNXReranker(folder, quant, threads=threads, cap=spec.max_tokens), doc_tokens
        )
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise JinalocError(
            "the GGUF reranker needs llama-cpp-python: pip install 'jinaloc[gguf]'"
            " (or use --backend onnx)"
        ) from None
    if path is not None and path.is_file():
        if quant:
            raise JinalocError("--quant applies to registry rerankers, not to a .gguf file")
    else:
        path = hub.reranker_file(spec, quant, offline=offline, download=download)
    from .backends.rerank_gguf import GGUFReranker

    return Reranker(spec, GGUFReranker(path, threads=threads), doc_tokens)
