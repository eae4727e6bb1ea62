"""How jinaloc drives llama.cpp's decode (issue 25): which tokens each decode outputs.

In embedding mode llama.cpp makes every token an output, and a causal model (small, the
Qwen3 reranker) then runs its output head (small's tied 151936-row lm_head: 22% of its
time on the full-size model, docs/benchmarks.md 1g) and its last layer on every token. The
GGUF backend decodes a causal pack's tokens without outputs first and only each sequence's
last token with them; these tests pin that, and that the vectors are those of one decode."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, model_dir

pytest.importorskip("llama_cpp")

import llama_cpp  # noqa: E402
from llama_cpp import _internals  # noqa: E402

from jinaloc.backends.gguf import GGUFBackend  # noqa: E402
from jinaloc.hub import find_local_gguf  # noqa: E402
from jinaloc.registry import spec_from_folder  # noqa: E402

RERANKER = ROOT / "tests" / "fixtures" / "tiny-qwen3-reranker" / "gguf"


def backend(family: str, quant: str = "F32") -> GGUFBackend:
    folder = model_dir(family)
    return GGUFBackend(
        lambda task: find_local_gguf(folder, task, quant), spec_from_folder(folder), threads=1
    )


@pytest.fixture
def decodes(monkeypatch):
    """Each llama_decode as (tokens, outputs, embeddings on)."""
    calls: list[tuple[int, int, bool]] = []
    embeddings = {}
    set_embeddings = llama_cpp.llama_set_embeddings
    decode = _internals.LlamaContext.decode

    def spy_set(ctx, value):
        embeddings[ctx] = value
        set_embeddings(ctx, value)

    def spy_decode(self, batch):
        b = batch.batch
        outputs = sum(bool(b.logits[i]) for i in range(b.n_tokens))
        calls.append((b.n_tokens, outputs, embeddings.get(self.ctx, True)))
        return decode(self, batch)

    monkeypatch.setattr(llama_cpp, "llama_set_embeddings", spy_set)
    monkeypatch.setattr(_internals.LlamaContext, "decode", spy_decode)
    return calls


IDS = [[5, 9, 31, 7, 12, 40], [8, 3], [22]]  # one pack: 9 tokens, one of a single token


def test_causal_decodes_the_body_without_outputs_then_the_last_tokens(decodes):
    b = backend("small")
    try:
        b.embed_tokens(IDS, "retrieval")
    finally:
        b.close()
    # all but each last token, no output, embeddings off; then the 3 last tokens, pooled
    assert decodes == [(6, 0, False), (3, 3, True)]


def test_the_encoder_decodes_each_pack_once_with_every_token_an_output(decodes):
    b = backend("nano")
    try:
        b.embed_tokens(IDS, "retrieval")
    finally:
        b.close()
    assert decodes == [(9, 9, True)]


@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_causal_vectors_equal_one_decode_with_every_token_an_output(quant):
    """The KV cache holds the same values whether the last token is decoded with the others
    or after them: the split changes no vector."""
    b = backend("small", quant)
    try:
        ids = [[5, 9, 31, 7, 12, 40, 3, 3, 18], [8, 3, 77], [22]]
        got = b.embed_tokens(ids, "retrieval")
        ctx = b._models["retrieval"].short
        ctx.ctx.kv_cache_clear()  # the decode before issue 25: one, every token an output
        ctx._fill([(sid, s, 0) for sid, s in enumerate(ids)], "all")
        ctx._decode()
        n = b.hidden_size
        want = np.array(
            [np.ctypeslib.as_array(ctx.ctx.get_embeddings_seq(i), shape=(n,)) for i in range(3)]
        )
        np.testing.assert_allclose(got, want, atol=1e-6)
    finally:
        b.close()


def test_a_single_token_sequence_needs_no_body_decode(decodes):
    b = backend("small")
    try:
        b.embed_tokens([[22]], "retrieval")
    finally:
        b.close()
    assert decodes == [(1, 1, True)]


@pytest.mark.parametrize("mode", ["rank", "logits"])
def test_reranker_outputs_only_each_pairs_last_token(decodes, mode):
    from jinaloc.backends.rerank_gguf import GGUFReranker

    name = "tiny-qwen3-reranker-F32.gguf" if mode == "rank" else "tiny-qwen3-lm-Q8_0.gguf"
    r = GGUFReranker(RERANKER / name, threads=1, mode=mode)
    try:
        prefix = list(range(10, 22))  # shared: decoded once
        r.score_tokens([prefix + [30, 31, 32], prefix + [40, 41], prefix + [50]])
    finally:
        r.close()
    assert decodes[0][:2] == (12, 0)  # the shared prefix: no output
    assert sum(out for _, out, _ in decodes) == 3  # one per pair
    assert sum(n for n, _, _ in decodes) == 12 + 6
