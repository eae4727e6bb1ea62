"""The tiny Qwen3-Reranker fixture's golden scores, shared by the GGUF and ONNX reranker
tests (neither imports the other: each skips without its own runtime)."""

from __future__ import annotations

import json

import numpy as np
from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-qwen3-reranker"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())
RANK_F32 = FIXTURE / "gguf" / "tiny-qwen3-reranker-F32.gguf"
F32_TOL = 1e-4
BIG = 100_000  # a document budget that trims nothing


def groups() -> list[tuple[str, str, list[dict]]]:
    """(instruction, query, cases) of golden.json; None there means the card's default."""
    out: dict = {}
    for c in GOLDEN["cases"]:
        inst = c["instruction"] if c["instruction"] is not None else GOLDEN["default_instruction"]
        out.setdefault((inst, c["query"]), []).append(c)
    return [(inst, q, cases) for (inst, q), cases in out.items()]


def scores_vs_golden(reranker) -> tuple[list[np.ndarray], list[np.ndarray]]:
    got, want = [], []
    for inst, query, cases in groups():
        docs = [c["document"] for c in cases]
        assert reranker.prompt_ids(query, docs, inst) == [c["token_ids"] for c in cases]
        got.append(reranker.score(query, docs, inst))
        want.append(np.array([c["score"] for c in cases]))
    return got, want
