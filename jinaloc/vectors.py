"""Vector maths shared by every backend: Matryoshka, normalization, binary packing."""

from __future__ import annotations

import base64

import numpy as np

from .errors import JinalocError

# sqlite-vec's vec_quantize_binary and bit[N] columns pack bit i of byte j as element
# 8*j + i (LSB-first); numpy's default and sentence-transformers are MSB-first.
BIT_ORDER = "little"
OUTPUT_TYPES = ("float", "binary", "ubinary", "base64")


def check_dim(dim: int | None, full: int, allowed: list[int] | None) -> int:
    """The dim to keep: `allowed` are the trained Matryoshka dims (None: any up to full)."""
    if dim is None:
        return full
    if allowed and dim not in allowed:
        raise JinalocError(
            f"dim {dim} is not one of the model's Matryoshka dims: {', '.join(map(str, allowed))}"
        )
    if not 1 <= dim <= full:
        raise JinalocError(f"dim must be between 1 and {full}, got {dim}")
    return dim


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def matryoshka(pooled: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Slice the raw pooled vectors to `dim`, then L2-normalize (Jina's order)."""
    pooled = np.asarray(pooled, dtype=np.float32)
    if dim is not None:
        pooled = pooled[..., :dim]
    return l2_normalize(pooled)


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Sign bits (x > 0) packed LSB-first: byte-compatible with sqlite-vec's bit[N]."""
    return np.packbits(np.asarray(x) > 0, axis=-1, bitorder=BIT_ORDER)


def unpack_bits(packed: np.ndarray, dim: int) -> np.ndarray:
    return np.unpackbits(packed, axis=-1, count=dim, bitorder=BIT_ORDER).astype(bool)


def encode(x: np.ndarray, kind: str) -> list:
    """Per-row values in Jina's API encodings: float, binary (int8), ubinary (uint8), base64."""
    if kind == "float":
        return [row.tolist() for row in np.asarray(x, dtype=np.float32)]
    if kind == "ubinary":
        return [row.tolist() for row in pack_bits(x)]
    if kind == "binary":
        # Jina's `binary`: the packed byte minus 128, as int8.
        return [(row.astype(np.int16) - 128).astype(np.int8).tolist() for row in pack_bits(x)]
    if kind == "base64":
        # Little-endian float32 bytes, as OpenAI's encoding_format=base64.
        return [
            base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
            for row in np.asarray(x, dtype=np.float32)
        ]
    raise JinalocError(f"unknown output type {kind!r}: choose one of {', '.join(OUTPUT_TYPES)}")
