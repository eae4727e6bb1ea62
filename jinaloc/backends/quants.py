"""The quant names each runtime takes, and which one a model uses when none is asked."""

from __future__ import annotations

from ..errors import JinalocError
from ..registry import ModelSpec

MLX_QUANTS = {"q8": 8, "8": 8, "8bit": 8, "q4": 4, "4": 4, "4bit": 4}
# ONNX: fp32, or int8 weights (activations are quantized to uint8 per tensor and call by
# ORT). QInt8 weights run ORT's u8s8 kernels (VNNI where the CPU has it), QUInt8 its u8u8
# ones: measured at 0.5-0.9x the speed on AVX-512 VNNI, same accuracy (docs/benchmarks.md).
ONNX_QUANTS = {"fp32": "fp32", "int8": "qint8", "qint8": "qint8", "quint8": "quint8"}
ONNX_DEFAULT_QUANT = "qint8"
# Tried in order when a local folder has no file in the model's default quant.
GGUF_FALLBACKS = ("F16", "BF16", "F32")


def mlx_bits(quant: str | None) -> int | None:
    if quant is None or quant.lower() in ("fp", "none", "f32", "fp32", "f16", "bf16"):
        return None
    try:
        return MLX_QUANTS[quant.lower()]
    except KeyError:
        raise JinalocError(f"unknown MLX quant {quant!r}: choose q8 or q4 (or omit)") from None


def onnx_quant(quant: str | None) -> str:
    if quant is None:
        return ONNX_DEFAULT_QUANT
    try:
        return ONNX_QUANTS[quant.lower()]
    except KeyError:
        raise JinalocError(
            f"unknown ONNX quant {quant!r}: choose fp32, int8 (= qint8) or quint8"
        ) from None


def pick_gguf_quant(spec: ModelSpec, task: str, quant: str | None) -> str:
    if quant:
        return quant
    if spec.path is None:
        return spec.default_quant
    from ..hub import local_gguf_quants

    have = local_gguf_quants(spec.path, task)
    for q in (spec.default_quant, *GGUF_FALLBACKS):
        if q in have:
            return q
    if have:
        return have[0]
    raise JinalocError(f"no GGUF files for task {task!r} in {spec.path} or its gguf/ folder")
