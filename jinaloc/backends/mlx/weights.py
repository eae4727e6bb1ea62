"""Base weights: load the safetensors as they are, or quantize once and cache the result."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ...errors import JinalocError
from ...paths import cache_dir
from ..canonical import weight_files

GROUP_SIZE = 64
CACHE_FORMAT = 1  # bump when the quantized layout changes

log = logging.getLogger("jinaloc")


def read(model: nn.Module, folder: Path) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for f in weight_files(folder):
        weights.update(mx.load(str(f)))
    return model.sanitize(weights)


def cache_path(folder: Path, bits: int) -> Path:
    """Keyed by the source files (path, size, mtime) and the quantization settings."""
    h = hashlib.sha256(f"v{CACHE_FORMAT} {bits} {GROUP_SIZE}".encode())
    for f in weight_files(folder):
        st = f.stat()
        h.update(f"\n{f.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_dir() / "mlx" / f"{folder.name}-q{bits}-{h.hexdigest()[:16]}.safetensors"


def plan(bits: int):
    """Linears at `bits`; the embedding table always at 8 bits: measured at 4 bits it costs
    far more accuracy than it saves (it is a lookup, not a matmul)."""

    def predicate(path: str, module: nn.Module) -> dict | bool:
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return False
        if module.weight.shape[-1] % GROUP_SIZE:
            return False  # rows must split into whole groups
        b = 8 if isinstance(module, nn.Embedding) else bits
        return {"group_size": GROUP_SIZE, "bits": b}

    return predicate


def cached_plan(cached: dict[str, mx.array]):
    """The same layout read back from a cache file: bits = packed width * 32 / input width."""

    def predicate(path: str, module: nn.Module) -> dict | bool:
        scales = cached.get(f"{path}.scales")
        if scales is None:
            return False
        bits = cached[f"{path}.weight"].shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
        return {"group_size": GROUP_SIZE, "bits": bits}

    return predicate


def quantize(model: nn.Module, bits: int) -> None:
    """Quantize the loaded weights in place (the slow step the cache avoids)."""
    nn.quantize(model, class_predicate=plan(bits))
    mx.eval(model.parameters())


def save(model: nn.Module, path: Path) -> bool:
    """Write atomically: a crash never leaves a half-written cache file behind."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(tmp), dict(tree_flatten(model.parameters())))
        os.replace(tmp, path)
        return True
    except (OSError, RuntimeError) as e:  # mlx reports write errors as RuntimeError
        # The model is quantized in memory already; only the next load gets slower.
        log.warning("could not cache the quantized weights in %s: %s", path.parent, e)
        return False
    finally:
        tmp.unlink(missing_ok=True)


def apply(model: nn.Module, weights: dict[str, mx.array]) -> None:
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise JinalocError(f"weights do not match config.json: {e}") from None
    mx.eval(model.parameters())


def load(model: nn.Module, folder: Path, bits: int | None) -> Path | None:
    """Fill `model` with its weights; returns the quantized cache file used, if any."""
    if bits is None:
        apply(model, read(model, folder))
        return None
    path = cache_path(folder, bits)
    if path.is_file():
        cached = mx.load(str(path))
        # Swap in quantized layers where the file has scales; their init values are
        # lazy and never computed, since the file's arrays replace them.
        nn.quantize(model, class_predicate=cached_plan(cached))
        apply(model, cached)
        return path
    apply(model, read(model, folder))
    quantize(model, bits)
    return path if save(model, path) else None
