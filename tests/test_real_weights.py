"""Checks on Jina's real weights: skipped unless JINALOC_REAL_WEIGHTS=1 (downloads ~0.5-1.5 GB)."""

import os

import numpy as np
import pytest

from jinaloc.load import default_backend, load_embedder

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(
        os.environ.get("JINALOC_REAL_WEIGHTS") != "1",
        reason="set JINALOC_REAL_WEIGHTS=1 to download and test the real models",
    ),
]


@pytest.fixture(autouse=True)
def _real_caches(monkeypatch):
    # The conftest isolates HF_HOME per test; real weights should use the user's cache.
    for var in ("HF_HOME", "HF_HUB_CACHE"):
        if os.environ.get(f"JINALOC_REAL_{var}"):
            monkeypatch.setenv(var, os.environ[f"JINALOC_REAL_{var}"])


@pytest.mark.parametrize("model", ["v5-nano", "v5-small"])
def test_real_model_ranks_the_relevant_passage_first(model):
    embedder = load_embedder(model, backend=os.environ.get("JINALOC_BACKEND", default_backend()))
    docs = [
        "Paris is the capital and largest city of France.",
        "The mitochondria is the powerhouse of the cell.",
        "Photosynthesis turns light into chemical energy in plants.",
    ]
    d = embedder.embed(docs, task="retrieval", prompt="document", dim=256)
    query = "What is the capital of France?"
    q = embedder.embed([query], task="retrieval", prompt="query", dim=256)
    scores = d @ q[0]
    assert int(np.argmax(scores)) == 0
    assert scores[0] - max(scores[1:]) > 0.1
