"""Backend selection: MLX or ONNX Runtime (canonical safetensors), or GGUF (llama.cpp)."""

from __future__ import annotations

from ..errors import JinalocError
from ..registry import ModelSpec
from .base import Backend
from .quants import mlx_bits, pick_gguf_quant


def open_backend(
    spec: ModelSpec,
    backend: str,
    quant: str | None,
    offline: bool = False,
    download: bool = True,
    task: str | None = None,
) -> Backend:
    """`task` is the one the caller will use first (GGUF files are per task)."""
    from .. import hub

    if backend == "mlx":
        try:
            import mlx.core  # noqa: F401
        except ImportError:
            raise JinalocError(
                "the MLX backend is not installed: pip install 'jinaloc[mlx]'"
                " (or use --backend gguf)"
            ) from None
        from .mlx import MLXBackend

        folder = hub.mlx_dir(spec, offline=offline, download=download)
        opened = MLXBackend(folder, spec, bits=mlx_bits(quant))
        opened.quant = quant or "default"
        return opened
    if backend == "gguf":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise JinalocError(
                "the GGUF backend is not installed: pip install 'jinaloc[gguf]'"
                " (or use --backend mlx)"
            ) from None
        from .gguf import GGUFBackend

        def path_for(task: str):
            return hub.gguf_file(
                spec, task, pick_gguf_quant(spec, task, quant), offline=offline, download=download
            )

        opened = GGUFBackend(path_for, spec, task=task)
        opened.quant = pick_gguf_quant(spec, task or "retrieval", quant)
        return opened
    if backend == "onnx":
        import importlib.util

        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            onnxruntime = None
        # `onnx` only builds graphs (0.8 s to import): found is enough, a cached one runs without.
        if onnxruntime is None or importlib.util.find_spec("onnx") is None:
            raise JinalocError(
                "the ONNX backend is not installed: pip install 'jinaloc[onnx]'"
                " (or use --backend gguf)"
            ) from None
        from .onnx import ONNXBackend

        # The canonical files, as for MLX: the graph is built from them.
        folder = hub.mlx_dir(spec, offline=offline, download=download)
        return ONNXBackend(folder, spec, quant=quant)
    raise JinalocError(f"unknown backend {backend!r}: choose mlx, gguf, onnx or auto")
