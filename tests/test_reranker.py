"""The Qwen3-Reranker API on the tiny fixture: scores equal the model card's recipe.

tests/fixtures/tiny-qwen3-reranker/golden.json holds P(yes) computed by the card's
transformers recipe (scripts/make_tiny_reranker.py); the GGUFs were made by llama.cpp's own
converter: a RANK-pooling file with the yes/no cls head (F32, Q8_0) and a plain-LM file
(Q8_0) scored from the full logits."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

from reranker_helpers import (  # noqa: E402
    BIG,
    F32_TOL,
    FIXTURE,
    GOLDEN,
    RANK_F32,
    groups,
    scores_vs_golden,
)

from jinaloc.errors import JinalocError  # noqa: E402
from jinaloc.load import load_embedder  # noqa: E402
from jinaloc.reranker import DEFAULT_INSTRUCTION, load_reranker  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

RANK_Q8 = FIXTURE / "gguf" / "tiny-qwen3-reranker-Q8_0.gguf"
LM_Q8 = FIXTURE / "gguf" / "tiny-qwen3-lm-Q8_0.gguf"
# Random weights this large (std 0.25) amplify Q8_0 rounding; measured worst case 0.031.
Q8_TOL = 0.05
# One thread: on a loaded 2-core machine llama.cpp's spinning threads make tiny models 15x slower.
T = 1


@pytest.fixture(scope="module")
def f32():
    r = load_reranker(str(RANK_F32), threads=T, doc_tokens=BIG)
    yield r
    r.close()


def test_f32_scores_equal_the_card_recipe_and_rank_the_same(f32):
    assert f32.backend.mode == "rank"
    got, want = scores_vs_golden(f32)
    worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    print(f"F32 vs golden: max abs diff {worst:.2e} over {len(GOLDEN['cases'])} pairs")
    assert worst < F32_TOL
    for g, w in zip(got, want, strict=True):
        assert list(np.argsort(-g, kind="stable")) == list(np.argsort(-w, kind="stable"))


def test_q8_0_scores_within_tolerance_and_order_clear_gaps_the_same():
    r = load_reranker(str(RANK_Q8), threads=T, doc_tokens=BIG)
    try:
        got, want = scores_vs_golden(r)
    finally:
        r.close()
    worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    print(f"Q8_0 vs golden: max abs diff {worst:.4f} (tolerance {Q8_TOL})")
    assert worst < Q8_TOL
    # Pairs whose golden scores differ by more than the error on both sides keep their order.
    checked = 0
    for g, w in zip(got, want, strict=True):
        for i, j in combinations(range(len(w)), 2):
            if abs(w[i] - w[j]) > 2 * Q8_TOL:
                assert (g[i] > g[j]) == (w[i] > w[j])
                checked += 1
    assert checked > 50


def test_a_gguf_without_cls_head_is_scored_from_its_logits_exactly_like_rank_pooling():
    rank, lm = load_reranker(str(RANK_Q8), threads=T), load_reranker(str(LM_Q8), threads=T)
    try:
        assert (rank.backend.mode, lm.backend.mode) == ("rank", "logits")
        for inst, query, cases in groups()[:4]:
            docs = [c["document"] for c in cases]
            a, b = rank.score(query, docs, inst), lm.score(query, docs, inst)
            # Same weights, same Q8_0 rows for "yes"/"no": only float summation order differs.
            np.testing.assert_allclose(a, b, atol=1e-5)
    finally:
        rank.close()
        lm.close()


def test_the_rank_file_scored_from_its_logits_gives_the_same_scores(f32):
    from jinaloc.backends.rerank_gguf import GGUFReranker

    inst, query, cases = groups()[1]
    seqs = f32.prompt_ids(query, [c["document"] for c in cases], inst)
    logits = GGUFReranker(RANK_F32, threads=T, mode="logits")
    try:
        assert logits.mode == "logits"
        np.testing.assert_allclose(
            logits.score_tokens(seqs), f32.backend.score_tokens(seqs), atol=1e-6
        )
    finally:
        logits.close()
    with pytest.raises(JinalocError, match="has no yes/no rank head"):
        GGUFReranker(LM_Q8, threads=T, mode="rank")


def test_packing_and_the_shared_prefix_do_not_change_scores(f32):
    inst, query, cases = groups()[0]
    docs = [c["document"] for c in cases]
    together = f32.score(query, docs, inst)
    alone = np.array([f32.score(query, [d], inst)[0] for d in docs])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    # One pair per decode, and no shared prefix (each pair from its first token).
    seqs = f32.prompt_ids(query, docs, inst)
    backend = f32.backend
    old = backend.pack_tokens
    backend.pack_tokens = 1
    try:
        unpacked = backend.score_tokens(seqs)
    finally:
        backend.pack_tokens = old
    np.testing.assert_allclose(together, unpacked, atol=1e-6)
    from_scratch = np.array([backend.score_tokens([s, [s[0]]])[0] for s in seqs])
    np.testing.assert_allclose(together, from_scratch, atol=1e-6)


def test_default_instruction_is_the_note_search_one(f32):
    cases = [c for c in GOLDEN["cases"] if c["instruction"] == DEFAULT_INSTRUCTION]
    assert cases
    query = cases[0]["query"]
    mine = [c for c in cases if c["query"] == query]
    got = f32.score(query, [c["document"] for c in mine])
    np.testing.assert_allclose(got, [c["score"] for c in mine], atol=F32_TOL)


def test_documents_are_trimmed_to_the_token_budget():
    r = load_reranker(str(RANK_F32), threads=T, doc_tokens=8)
    try:
        long_doc = max(GOLDEN["cases"], key=lambda c: len(c["document"]))["document"]
        trimmed = r.trim(long_doc)
        assert long_doc.startswith(trimmed) and len(trimmed) < len(long_doc)
        assert len(r.backend.tokenize(trimmed)) <= 8
        assert r.trim("short") == "short"
        big = load_reranker(str(RANK_F32), threads=T, doc_tokens=BIG)
        try:
            assert r.score("router", [long_doc])[0] == pytest.approx(
                big.score("router", [trimmed])[0], abs=1e-6
            )
            assert abs(r.score("router", [long_doc])[0] - big.score("router", [long_doc])[0]) > 1e-4
        finally:
            big.close()
    finally:
        r.close()


def test_no_documents_and_empty_documents(f32):
    assert f32.score("q", []).shape == (0,)
    s = f32.score("q", ["", ""])
    assert s.shape == (2,) and 0 < s[0] < 1 and s[0] == pytest.approx(s[1])


def test_bad_reranker_names_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(JinalocError, match="unknown reranker 'nope'.*qwen3-reranker-0.6b"):
        load_reranker("nope")
    with pytest.raises(JinalocError, match="not found"):
        load_reranker(str(tmp_path / "missing.gguf"))
    with pytest.raises(JinalocError, match="embedding model, not a reranker"):
        load_reranker("v5-nano")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(JinalocError, match="not a GGUF"):
        load_reranker(str(bad))
    nano = FIXTURES / "tiny-v5-nano" / "gguf" / "v5-nano-retrieval-F32.gguf"
    with pytest.raises(JinalocError, match="architecture 'eurobert'"):
        load_reranker(str(nano))
    with pytest.raises(JinalocError, match="is a reranker, not an embedding model"):
        load_embedder("qwen3-reranker-0.6b", offline=True)
    with pytest.raises(JinalocError, match="--quant applies to registry rerankers"):
        load_reranker(str(RANK_F32), quant="Q8_0")


def test_registry_reranker_offline_and_not_downloaded_is_a_one_line_error():
    with pytest.raises(JinalocError) as e:
        load_reranker("qwen3-reranker-0.6b", offline=True, backend="gguf")
    # The library names what is missing; the CLI's line names the command.
    from jinaloc.cli.errors import error_line

    msg = error_line(e.value)
    assert "\n" not in msg
    assert "not downloaded and offline mode is on" in msg
    assert "jinaloc models pull qwen3-reranker-0.6b --format gguf --quant Q8_0" in msg
    with pytest.raises(JinalocError, match="has no quant 'Q2_K'"):
        load_reranker("qwen3-reranker-0.6b", quant="Q2_K", offline=True)


def test_a_user_models_toml_can_add_a_reranker_and_make_it_the_default():
    from jinaloc.paths import user_models_toml
    from jinaloc.reranker import resolve_reranker

    toml = user_models_toml()
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text(
        f'default_reranker = "mine"\n\n[models.mine]\nkind = "reranker"\npath = "{RANK_F32}"\n'
    )
    spec, path = resolve_reranker(None)
    assert (spec.name, spec.kind, path) == ("mine", "reranker", None)
    r = load_reranker(threads=T)  # the user's default, from its local path
    try:
        assert r.name == "mine" and r.backend.path == RANK_F32
    finally:
        r.close()
