"""Vector maths shared by every backend: Matryoshka, normalization, binary packing."""

from __future__ import annotations

import base64

import numpy as np

from .errors import JinalocError, check_choice

# sqlite-vec's vec_quantize_binary and bit[N] columns pack bit i of byte j as element
# 8*j + i (LSB-first): the index's order. Jina's API (and numpy's default, and
# sentence-transformers) pack MSB-first: element 8*j is the high bit of byte j. Vectors on
# the wire (`serve`, `jinaloc embed --type`) use Jina's order, so they mix with api.jina.ai's.
BIT_ORDER = "little"
WIRE_BIT_ORDER = "big"
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


def note_vectors(vectors: np.ndarray, counts) -> np.ndarray:
    """One vector per note from its chunks' vectors (consecutive rows, `counts` per note):
    the normalized mean, so long notes count whole, not cut at the model's context."""
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 1).any():
        raise ValueError("every note needs at least one chunk vector")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return l2_normalize(np.add.reduceat(np.asarray(vectors, dtype=np.float32), starts, axis=0))


def matryoshka(pooled: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Slice the raw pooled vectors to `dim`, then L2-normalize (Jina's order)."""
    pooled = np.asarray(pooled, dtype=np.float32)
    if dim is not None:
        pooled = pooled[..., :dim]
    return l2_normalize(pooled)


def pack_bits(x: np.ndarray, bitorder: str = BIT_ORDER) -> np.ndarray:
    """Sign bits (x > 0) packed; by default LSB-first, byte-compatible with sqlite-vec's
    bit[N]."""
    return np.packbits(np.asarray(x) > 0, axis=-1, bitorder=bitorder)


def quantize(x: np.ndarray, kind: str) -> np.ndarray:
    """Arrays in Jina's API types: float32, ubinary (sign bits packed MSB-first, uint8),
    binary (ubinary - 128, int8), bit for bit what api.jina.ai returns."""
    check_choice("output type", kind, OUTPUT_TYPES[:3])
    if kind == "float":
        return np.asarray(x, dtype=np.float32)
    packed = pack_bits(x, WIRE_BIT_ORDER)
    if kind == "ubinary":
        return packed
    return (packed.astype(np.int16) - 128).astype(np.int8)


def encode(x: np.ndarray, kind: str) -> list:
    """Per-row JSON values: float, binary, ubinary lists, or base64 of little-endian float32
    (as OpenAI's encoding_format=base64)."""
    check_choice("output type", kind, OUTPUT_TYPES)
    if kind == "base64":
        rows = np.asarray(x, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
    return [row.tolist() for row in quantize(x, kind)]
