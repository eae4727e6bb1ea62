"""PEFT LoRA task adapters applied beside the base weights, so switching task is cheap."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from ...errors import JinalocError
from ..canonical import PEFT_PREFIX, lora_scale, read_adapter_config


class LoRALinear(nn.Module):
    """y = base(x) + (x @ A.T) @ (scale * B).T; base may be Linear or QuantizedLinear."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        # (A.T, scale * B.T) or () when no adapter: always a tuple, so nn.Module keeps it
        # in one place (it stores tuples as children, None as a plain attribute).
        self.pair: tuple = ()

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        if not self.pair:
            return y
        a_t, b_t = self.pair
        return y + (x @ a_t) @ b_t


def wrap(backbone: nn.Module, targets: set[str]) -> dict[str, LoRALinear]:
    """Put a LoRALinear around every Linear of `backbone` named in `targets`; path -> wrapper."""
    wrapped: dict[str, LoRALinear] = {}

    def visit(path: str, module: nn.Module) -> None:
        for name, child in module.children().items():
            sub = f"{path}{name}"
            if isinstance(child, list):
                for i, item in enumerate(child):
                    visit(f"{sub}.{i}.", item)
            elif isinstance(child, (nn.Linear, nn.QuantizedLinear)) and name in targets:
                wrapped[sub] = LoRALinear(child)
                setattr(module, name, wrapped[sub])
            elif isinstance(child, nn.Module):
                visit(f"{sub}.", child)

    visit("", backbone)
    return wrapped


def load(folder: Path, dtype: mx.Dtype) -> dict[str, tuple[mx.array, mx.array]]:
    """One adapter as module path -> (A.T, scale * B.T), in the model's compute dtype."""
    scale = lora_scale(read_adapter_config(folder))
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise JinalocError(f"missing LoRA weights: {weights_file}")
    tensors = mx.load(str(weights_file))
    pairs: dict[str, tuple[mx.array, mx.array]] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
        b = tensors[key.replace("lora_A", "lora_B")]
        # Scale in float32 before any cast to bf16.
        b_t = (b.astype(mx.float32) * scale).T.astype(dtype)
        pairs[path] = (a.T.astype(dtype), b_t)
    mx.eval(pairs)
    return pairs


def activate(wrapped: dict[str, LoRALinear], pairs: dict[str, tuple[mx.array, mx.array]]):
    unknown = set(pairs) - set(wrapped)
    if unknown:
        raise JinalocError(f"LoRA adapter targets unknown modules, e.g. {sorted(unknown)[0]}")
    for path, layer in wrapped.items():
        layer.pair = pairs.get(path, ())
