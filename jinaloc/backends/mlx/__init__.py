"""MLX backend: canonical safetensors + PEFT task adapters, EuroBERT (nano) or Qwen3 (small)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from ...errors import JinalocError
from ...registry import ModelSpec, detect_architecture
from ..base import Backend
from . import eurobert, lora, qwen3, weights

BUILDERS = {"eurobert": eurobert.build, "qwen3": qwen3.build}
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise JinalocError(f"missing {path.name} in {path.parent}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JinalocError(f"{path}: invalid JSON: {e}") from None


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
        self.max_tokens = int(config.get("max_position_embeddings") or 8192)
        if spec.max_tokens:
            self.max_tokens = min(self.max_tokens, spec.max_tokens)
        self._tokenizer, self._truncating = self._load_tokenizers()

        self.model = BUILDERS[self.architecture](config)
        self.cache_file = weights.load(self.model, self.folder, bits)
        self.base_loads = 1  # never grows: task switches only swap the LoRA pairs
        self._targets = self._adapter_targets()
        self._wrapped = lora.wrap(self.model.backbone, self._targets)
        self._adapters: dict[str, dict] = {}
        self.task: str | None = None

    # Tokenizer

    def _load_tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        path = self.folder / "tokenizer.json"
        if not path.is_file():
            raise JinalocError(f"missing tokenizer.json in {self.folder}")
        plain = Tokenizer.from_file(str(path))
        plain.no_padding()
        plain.no_truncation()
        # The tokenizers library truncates before its post-processor adds the special
        # tokens, so they survive, as with HF `truncation=True`.
        truncating = Tokenizer.from_file(str(path))
        truncating.no_padding()
        truncating.enable_truncation(self.max_tokens)
        return plain, truncating

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = [e.ids for e in encodings]
        lengths = [len(x) for x in ids]
        long = [i for i, n in enumerate(lengths) if n > self.max_tokens]
        if long:
            redone = self._truncating.encode_batch([texts[i] for i in long])
            for i, e in zip(long, redone, strict=True):
                ids[i] = e.ids
        return ids, lengths

    # Adapters

    def _adapter_targets(self) -> set[str]:
        targets: set[str] = set()
        for task in self.spec.tasks:
            folder = self.folder / "adapters" / task
            if (folder / "adapter_config.json").is_file():
                targets |= set(lora.read_config(folder).get("target_modules") or LORA_TARGETS)
        return targets or LORA_TARGETS

    def _use(self, task: str) -> None:
        if task == self.task:
            return
        if task not in self._adapters:
            folder = self.folder / "adapters" / task
            if not folder.is_dir():
                raise JinalocError(f"no LoRA adapter for task {task!r}: {folder} is missing")
            self._adapters[task] = lora.load(folder, self._dtype())
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
