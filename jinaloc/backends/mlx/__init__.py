"""MLX backend: canonical safetensors + PEFT task adapters, EuroBERT (nano) or Qwen3 (small)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ...errors import JinalocError
from ...registry import ModelSpec, detect_architecture
from ..base import Backend
from ..canonical import (
    LORA_TARGETS,
    HFTokenizer,
    adapter_dir,
    max_tokens,
    read_adapter_config,
    read_json,
)
from . import eurobert, lora, qwen3, weights

BUILDERS = {"eurobert": eurobert.build, "qwen3": qwen3.build}


class MLXBackend(Backend):
    name = "mlx"

    def __init__(self, folder: Path, spec: ModelSpec, bits: int | None = None):
        self.folder = Path(folder)
        self.spec = spec
        self.bits = bits
        config = read_json(self.folder / "config.json")
        self.architecture = spec.architecture or detect_architecture(config)
        if self.architecture not in BUILDERS:
            raise JinalocError(f"the MLX backend cannot run {self.architecture!r} models")
        self.hidden_size = int(config["hidden_size"])
        self.max_tokens = max_tokens(config, spec.max_tokens)
        self._hf = HFTokenizer(self.folder, self.max_tokens)
        self._tokenizer = self._hf.plain

        self.model = BUILDERS[self.architecture](config)
        self.cache_file = weights.load(self.model, self.folder, bits)
        self.base_loads = 1  # never grows: task switches only swap the LoRA pairs
        self._targets = self._adapter_targets()
        self._wrapped = lora.wrap(self.model.backbone, self._targets)
        self._adapters: dict[str, dict] = {}
        self.task: str | None = None

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        return self._hf.tokenize(texts)

    # Adapters

    def _adapter_targets(self) -> set[str]:
        targets: set[str] = set()
        for task in self.spec.tasks:
            folder = self.folder / "adapters" / task
            if (folder / "adapter_config.json").is_file():
                targets |= set(read_adapter_config(folder).get("target_modules") or LORA_TARGETS)
        return targets or LORA_TARGETS

    def _use(self, task: str) -> None:
        if task == self.task:
            return
        if task not in self._adapters:
            self._adapters[task] = lora.load(adapter_dir(self.folder, task), self._dtype())
        lora.activate(self._wrapped, self._adapters[task])
        self.task = task

    def _dtype(self) -> mx.Dtype:
        # The norms are never quantized, so they carry the compute dtype (f32 or bf16).
        return self.model.backbone.norm.weight.dtype

    # Forward

    def embed_tokens(self, batch: list[list[int]], task: str) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.hidden_size), np.float32)
        self._use(task)
        lengths = np.array([len(x) for x in batch])
        if lengths.min() == 0:
            raise JinalocError("cannot embed an empty token sequence")
        ids = np.zeros((len(batch), int(lengths.max())), np.int32)
        for row, seq in zip(ids, batch, strict=True):
            row[: len(seq)] = seq
        mask = None
        if lengths.min() != lengths.max():
            mask = mx.array(np.arange(ids.shape[1])[None, :] < lengths[:, None])
        hidden = self.model(mx.array(ids), mask)
        pooled = hidden[mx.arange(len(batch)), mx.array(lengths - 1)]
        return np.array(pooled.astype(mx.float32))

    def close(self) -> None:
        self.model = None
        self._adapters.clear()
