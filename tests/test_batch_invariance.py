"""A text's vector does not depend on what it is batched or padded with, on every backend
(issue 24): alone vs beside short, long and many neighbours, cosine >= 0.99999; ONNX int8,
whose activations are quantized per token row and multiplied in integers, bit-identical.
(ONNX fp32 is not always: onnxruntime's float GEMM picks kernels by shape, ~4e-8 apart.)"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import FAMILIES, model_dir
from index_helpers import have_gguf

from jinaloc.load import load_embedder

MIN_COS = 0.99999
TARGETS = ["hello world", "Steuererklärung bis Ende Mai, sonst wird es teuer", "a b c " * 20]
SHORT = ["second", "x"]
LONG = ["a much longer neighbour that pads the batch " * 12]
MANY = [f"note {i}: the meeting about budget planning, item {i}" for i in range(20)]


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


BACKENDS = [
    pytest.param("onnx", "qint8", marks=pytest.mark.skipif(not have("onnxruntime"), reason="onnx")),
    pytest.param(
        "onnx", "quint8", marks=pytest.mark.skipif(not have("onnxruntime"), reason="onnx")
    ),
    pytest.param("onnx", "fp32", marks=pytest.mark.skipif(not have("onnxruntime"), reason="onnx")),
    pytest.param("gguf", "F32", marks=pytest.mark.skipif(not have_gguf(), reason="gguf")),
    pytest.param("gguf", "Q8_0", marks=pytest.mark.skipif(not have_gguf(), reason="gguf")),
    pytest.param("mlx", "fp32", marks=pytest.mark.skipif(not have("mlx"), reason="mlx")),
    pytest.param("mlx", "q8", marks=pytest.mark.skipif(not have("mlx"), reason="mlx")),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("invariance-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JINALOC_CACHE_DIR", str(path))
        yield path


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend,quant", BACKENDS)
def test_alone_equals_batched(family, backend, quant, cache):
    emb = load_embedder(str(model_dir(family)), backend=backend, quant=quant, offline=True)
    try:
        alone = np.vstack([emb.embed([t], batch_size=1) for t in TARGETS])
        for neighbours in (SHORT, LONG, MANY, SHORT + LONG + MANY):
            batched = emb.embed([*TARGETS, *neighbours], batch_size=64)[: len(TARGETS)]
            cos = (alone * batched).sum(1)
            assert cos.min() >= MIN_COS, (neighbours[0], cos)
            if backend == "onnx" and quant != "fp32":  # integer matmuls: exactly the same
                np.testing.assert_array_equal(alone, batched)
        # Same texts in another order and batch size: the same vectors.
        again = emb.embed([*MANY[:3], *reversed(TARGETS)], batch_size=2)[3:][::-1]
        assert (alone * again).sum(1).min() >= MIN_COS
    finally:
        emb.close()
