"""ONNX Runtime backend: jinaloc writes the graph itself from the canonical safetensors, with
one task's LoRA adapter merged, float32 or int8 (weights per output column, activations per
token row, in the graph), and caches the result per model, task and quant."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ...errors import JinalocError
from ...paths import cache_dir
from ...registry import ModelSpec, detect_architecture
from ..base import Backend
from ..canonical import (
    HFTokenizer,
    adapter_dir,
    max_tokens,
    merge_adapter,
    read_json,
    read_weights,
    weight_files,
)
from ..quants import onnx_quant
from ..threads import default_threads

log = logging.getLogger("jinaloc")

CACHE_FORMAT = 5  # bump when the graph or the quantization settings change (3: per-row int8;
# 4: saved as ONNX Runtime optimizes it; 5: one quantization per input, contrib RoPE, add+norm)
# Attention scores of one forward pass (batch x heads x seq^2 floats) are kept under this by
# splitting the batch; a single sequence longer than it allows still runs, alone.
SCORE_BYTES = 256 << 20
# Tokens (rows x padded length) per forward pass, per architecture: a smaller pass keeps its
# activations in the CPU caches between the graph's element-wise steps, a larger one gives the
# int8 GEMMs more rows. 512 (4 texts of 128): 1.24x (nano) and 1.19x (small) one pass of 32 x 128
# on an AVX-512 VNNI CPU (issue 25); on an AVX2 one, caps of 512 to 4096 measured within the
# noise (docs/benchmarks.md, section 1f). A single sequence longer than the cap runs alone.
# ONNXBackend(pass_tokens=...) overrides it.
PASS_TOKENS = {"eurobert": 512, "qwen3": 512}


def cache_path(folder: Path, task: str, quant: str) -> Path:
    """Keyed by the source files (path, size, mtime), the task and the quant."""
    h = hashlib.sha256(f"v{CACHE_FORMAT} {task} {quant}".encode())
    for f in [*weight_files(folder), *sorted(adapter_dir(folder, task).glob("*"))]:
        st = f.stat()
        h.update(f"\n{f.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_dir() / "onnx" / f"{folder.name}-{task}-{quant}-{h.hexdigest()[:16]}"


def build(folder: Path, task: str, quant: str, config: dict, architecture: str, out: Path):
    """Write `out`/model.onnx (+ .data): the merged graph, float32 or int8 (graph.int8_matmul),
    saved as ONNX Runtime optimizes it."""
    from . import graph  # imports `onnx` (0.8 s): only a build needs it, never a cached run

    weights = merge_adapter(read_weights(folder), adapter_dir(folder, task))
    out.mkdir(parents=True, exist_ok=True)
    graph.build(config, architecture, weights, out / "model.onnx", quant)
    del weights
    _save_optimized(out / "model.onnx")


def _save_optimized(model: Path) -> None:
    """Replace `model` with the graph ONNX Runtime makes of it (fusions, constant folding),
    so that a session of the cached model skips most of that work: session creation 0.6-0.75x
    on a full-size nano int8 (docs/benchmarks.md, section 8b). The "extended" level only: the
    "all" level's layout changes may be specific to this CPU."""
    optimized = model.parent / "optimized"
    optimized.mkdir()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized / model.name)
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", model.name + ".data"
    )
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for f in model.parent.iterdir():
        if f.is_file():
            f.unlink()
    for f in optimized.iterdir():
        f.rename(model.parent / f.name)
    optimized.rmdir()


def cached_model(folder: Path, task: str, quant: str, config: dict, architecture: str) -> Path:
    """The model file for this task and quant, built on first use. The build happens in a
    temporary folder renamed into place, so a crash or a concurrent build never leaves a
    half-written model behind."""
    final = cache_path(folder, task, quant)
    return build_once(
        final,
        lambda tmp: build(folder, task, quant, config, architecture, tmp),
        f"{folder.name}/{task} ({quant})",
    )


def build_once(final: Path, make, what: str) -> Path:
    """`final`/model.onnx, made by `make(folder)` into a temporary folder first."""
    if (final / "model.onnx").is_file():
        return final / "model.onnx"
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the ONNX model for %s, once", what)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        make(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "model.onnx").is_file():  # not just another process winning
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.onnx"


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session of a cached graph on the CPU, `threads` for its operators."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types; all mean a broken file
        raise JinalocError(f"onnxruntime cannot load {path}: {e}") from None


class ONNXBackend(Backend):
    name = "onnx"

    def __init__(
        self,
        folder: Path,
        spec: ModelSpec,
        quant: str | None = None,
        threads: int | None = None,
        pass_tokens: int | None = None,
    ):
        self.folder = Path(folder)
        self.spec = spec
        self.quant = onnx_quant(quant)
        self.threads = threads or default_threads()
        self.config = read_json(self.folder / "config.json")
        self.architecture = spec.architecture or detect_architecture(self.config)
        if self.architecture not in ("eurobert", "qwen3"):
            raise JinalocError(f"the ONNX backend cannot run {self.architecture!r} models")
        self.hidden_size = int(self.config["hidden_size"])
        self.vocab_size = int(self.config.get("vocab_size") or 0)
        self.heads = int(self.config["num_attention_heads"])
        self.max_tokens = max_tokens(self.config, spec.max_tokens)
        self.pass_tokens = pass_tokens or PASS_TOKENS[self.architecture]
        self._hf = HFTokenizer(self.folder, self.max_tokens)
        # One task's session at a time: each holds a full copy of the merged weights.
        self.task: str | None = None
        self.session: ort.InferenceSession | None = None
        self.model_file: Path | None = None

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        return self._hf.tokenize(texts)

    def _use(self, task: str) -> ort.InferenceSession:
        if task != self.task or self.session is None:
            self.session = None  # free the previous task's weights first
            path = cached_model(self.folder, task, self.quant, self.config, self.architecture)
            self.session = open_session(path, self.threads)
            self.task, self.model_file = task, path
        return self.session

    def passes(self, lengths: list[int]) -> list[tuple[int, int]]:
        """(start, end) of each forward pass over sequences sorted longest first: as many as
        fit in pass_tokens padded tokens and keep the attention scores under SCORE_BYTES, at
        least one."""
        out: list[tuple[int, int]] = []
        start = 0
        while start < len(lengths):
            width = lengths[start]
            rows = min(self.pass_tokens // width, SCORE_BYTES // (self.heads * width**2 * 4))
            end = min(len(lengths), start + max(1, rows))
            out.append((start, end))
            start = end
        return out

    def embed_tokens(self, batch: list[list[int]], task: str) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.hidden_size), np.float32)
        lengths = np.array([len(x) for x in batch])
        if lengths.min() == 0:
            raise JinalocError("cannot embed an empty token sequence")
        if lengths.max() > self.max_tokens:
            raise JinalocError(f"input of {lengths.max()} tokens exceeds {self.max_tokens}")
        lo, hi = min(map(min, batch)), max(map(max, batch))
        if lo < 0 or (self.vocab_size and hi >= self.vocab_size):
            raise JinalocError(f"token id outside the vocabulary (0..{self.vocab_size - 1})")
        session = self._use(task)
        out = np.empty((len(batch), self.hidden_size), np.float32)
        order = np.argsort(-lengths, kind="stable")  # longest first: least padding per pass
        for start, end in self.passes(lengths[order].tolist()):
            rows = [batch[i] for i in order[start:end]]
            width = len(rows[0])
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for i, seq in enumerate(rows):
                ids[i, : len(seq)] = seq
                mask[i, : len(seq)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            out[order[start:end]] = session.run(["pooled"], feed)[0]
        return out

    def close(self) -> None:
        self.session = None
        self.task = None
