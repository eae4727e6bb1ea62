"""The canonical model folder without any runtime: configs, tokenizer, numpy weights, adapters.

Shared by the backends that start from Jina's safetensors (MLX, ONNX); numpy only.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import JinalocError

PEFT_PREFIX = "base_model.model."
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# safetensors dtype names -> numpy; BF16 has no numpy type and is widened by hand.
DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise JinalocError(f"missing {path.name} in {path.parent}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JinalocError(f"{path}: invalid JSON: {e}") from None


# --- tokenizer ---


class HFTokenizer:
    """tokenizer.json through `tokenizers`, truncating as HF `truncation=True` does."""

    def __init__(self, folder: Path, max_tokens: int):
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise JinalocError(f"missing tokenizer.json in {folder}")
        self.max_tokens = max_tokens
        self.plain = Tokenizer.from_file(str(path))
        self.plain.no_padding()
        self.plain.no_truncation()
        # The tokenizers library truncates before its post-processor adds the special
        # tokens, so they survive, as with HF `truncation=True`.
        self.truncating = Tokenizer.from_file(str(path))
        self.truncating.no_padding()
        self.truncating.enable_truncation(max_tokens)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        encodings = self.plain.encode_batch(list(texts))
        ids = [e.ids for e in encodings]
        lengths = [len(x) for x in ids]
        long = [i for i, n in enumerate(lengths) if n > self.max_tokens]
        if long:
            redone = self.truncating.encode_batch([texts[i] for i in long])
            for i, e in zip(long, redone, strict=True):
                ids[i] = e.ids
        return ids, lengths


def max_tokens(config: dict, cap: int | None) -> int:
    n = int(config.get("max_position_embeddings") or 8192)
    return min(n, cap) if cap else n


# --- weights ---


def weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise JinalocError(f"no model.safetensors in {folder}")
    return files


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of one file as float32, without torch."""
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        # Mapped, not read: float32 tensors stay views of the file until they are changed.
        data = np.memmap(path, np.uint8, mode="r", offset=8 + n)
    except (OSError, struct.error, ValueError) as e:
        raise JinalocError(f"{path}: unreadable safetensors file: {e}") from None
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        dtype = info["dtype"]
        if dtype == "BF16":  # the upper half of a float32
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in DTYPES:
            arr = raw.view(DTYPES[dtype]).astype(np.float32, copy=False)
        else:
            raise JinalocError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        out[name] = arr.reshape(info["shape"])
    return out


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """The base weights, float32, keys without a "model." prefix."""
    weights: dict[str, np.ndarray] = {}
    for f in weight_files(folder):
        weights.update(read_safetensors(f))
    return {k.removeprefix("model."): v for k, v in weights.items()}


# --- LoRA adapters ---


def read_adapter_config(folder: Path) -> dict:
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise JinalocError(f"missing LoRA adapter: {config_file}")
    config = read_json(config_file)
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise JinalocError(f"{config_file}: DoRA and per-module rank/alpha are not supported")
    return config


def lora_scale(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / r**0.5 if config.get("use_rslora") else alpha / r


def adapter_dir(folder: Path, task: str) -> Path:
    path = folder / "adapters" / task
    if not path.is_dir():
        raise JinalocError(f"no LoRA adapter for task {task!r}: {path} is missing")
    return path


def merge_adapter(weights: dict[str, np.ndarray], folder: Path) -> dict[str, np.ndarray]:
    """Base weights with one adapter merged in: W' = W + scale * B @ A (float32)."""
    scale = lora_scale(read_adapter_config(folder))
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise JinalocError(f"missing LoRA weights: {weights_file}")
    tensors = read_safetensors(weights_file)
    merged = dict(weights)
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight") + ".weight"
        if name not in merged:
            raise JinalocError(
                f"LoRA adapter targets unknown module {name.removesuffix('.weight')}"
            )
        b = tensors[key.replace("lora_A", "lora_B")]
        merged[name] = merged[name] + np.float32(scale) * (b @ a)
    return merged
