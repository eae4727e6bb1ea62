"""`jinaloc serve` against Jina's documented API, request by request, on a real server (the
tiny nano fixture through `jinaloc serve`).

Written from what Jina documents, not from jinaloc's own shapes:
- jina-ai/meta-prompt, v14.txt (Jina's API guide, 2026): the request body of
  /v1/embeddings for jina-embeddings-v5-text-nano/-small: `model`, `input` (array of
  strings), `embedding_type` ("string or array of strings", float | base64 | binary |
  ubinary, default float), `task` (retrieval.query, retrieval.passage, text-matching,
  classification, clustering), `dimensions`, `normalized`, `late_chunking`, `truncate`;
  /v1/rerank: `query` ("string or TextDoc"), `documents` ("array of strings and/or
  TextDocs ... If a document object is provided, all text fields will be preserved in the
  response"), `top_n` ("defaults to the length of documents"), `return_documents` (default
  true; "If false, returns only the index and relevance score without the document text");
  its batch output shows the embeddings body: `data` items with `embedding` and `index`,
  `model`, `usage.prompt_tokens`.
- api.jina.ai/openapi.json ("Jina Search Foundation API") and Jina's typed clients
  (llamaindex's JinaEmbeddingResponse: `model`, `object`, `usage` {total_tokens,
  prompt_tokens}, `data` [{object, index, embedding}]): the embeddings envelope; the rerank
  envelope is `model`, `usage` {total_tokens}, `results` [{index, relevance_score,
  document}].
- Issue 24, measured against the hosted API: `ubinary` packs the sign bits MSB-first
  (np.packbits(x > 0)) and `binary` = ubinary - 128 (ubinary [50, 193, 128, 255] is binary
  [-78, 65, 0, 127]); `embedding_type` as a list gives each item's `embedding` as an object
  with one value per type; the aliases api.jina.ai accepts (`task_type`, `encoding_type` /
  `encoding_format`, `output_dimension`, `truncation`, rerank's `top_k`) and its refusal of
  `late_chunking: true` for the v5 models (their model pages say "Late Chunking: No").
- Jina's own reranker script (jina-reranker-v3 GGUF, rerank.py) counts `max_doc_length` in
  tokens per document.

jinaloc adds two documented fields to each embedding item, `tokens` and (when cut)
`input_tokens`; everything Jina sends is there, under Jina's names.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from index_helpers import have_gguf
from server_helpers import MODEL_ARGS, ServeProcess, call

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
for _module in ("uvicorn", "starlette"):
    pytest.importorskip(_module)

TEXTS = ["the cat sat on the mat", "Steuererklärung bis Ende Mai", "how do I rotate api keys"]
JINA_ITEM = {"object", "index", "embedding"}
JINALOC_ITEM = {"tokens", "input_tokens"}  # jinaloc's documented extras


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    proc = ServeProcess(tmp_path_factory.mktemp("jina") / "state", *MODEL_ARGS)
    try:
        yield proc.url
    finally:
        proc.stop()


def embed(url, **body):
    status, out = call(url, "/v1/embeddings", {"input": TEXTS, **body})
    assert status == 200, out
    return out


def vectors(out, kind=None):
    rows = [d["embedding"] if kind is None else d["embedding"][kind] for d in out["data"]]
    return np.array(rows)


# --- /v1/embeddings ------------------------------------------------------------------------


def test_envelope_and_usage_are_jinas(url):
    out = embed(url, model="tiny-v5-nano", task="retrieval.passage")
    assert set(out) == {"model", "object", "usage", "data"}
    assert out["object"] == "list" and out["model"] == "tiny-v5-nano"
    assert set(out["usage"]) == {"total_tokens", "prompt_tokens"}
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] > len(TEXTS)
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    for item in out["data"]:
        assert JINA_ITEM <= set(item) <= JINA_ITEM | JINALOC_ITEM
        assert item["object"] == "embedding"
    assert sum(d["tokens"] for d in out["data"]) == out["usage"]["total_tokens"]
    x = vectors(out)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)


def test_binary_types_are_msb_first_as_jinas(url):
    floats = vectors(embed(url, embedding_type="float"))
    ubinary = vectors(embed(url, embedding_type="ubinary"))
    binary = vectors(embed(url, embedding_type="binary"))
    assert ubinary.shape == (3, floats.shape[1] // 8)
    assert ubinary.min() >= 0 and ubinary.max() <= 255
    assert binary.min() >= -128 and binary.max() <= 127
    np.testing.assert_array_equal(ubinary, np.packbits(floats > 0, axis=1))  # MSB-first
    np.testing.assert_array_equal(binary, ubinary - 128)


def test_embedding_type_list_gives_an_object_per_item(url):
    out = embed(url, embedding_type=["float", "binary", "ubinary", "base64"], dimensions=32)
    for item in out["data"]:
        assert list(item["embedding"]) == ["float", "binary", "ubinary", "base64"]
    floats = vectors(out, "float")
    assert floats.shape == (3, 32)
    np.testing.assert_array_equal(vectors(out, "ubinary"), np.packbits(floats > 0, axis=1))
    np.testing.assert_array_equal(vectors(out, "binary"), vectors(out, "ubinary") - 128)
    decoded = [
        np.frombuffer(base64.b64decode(d["embedding"]["base64"]), "<f4") for d in out["data"]
    ]
    np.testing.assert_array_equal(np.array(decoded), floats.astype(np.float32))
    # A list of one type is still an object; a string is the value itself.
    one = embed(url, embedding_type=["ubinary"])
    assert set(one["data"][0]["embedding"]) == {"ubinary"}
    assert isinstance(embed(url, embedding_type="ubinary")["data"][0]["embedding"], list)


@pytest.mark.parametrize(
    "alias,field,value",
    [
        ("task_type", "task", "retrieval.query"),
        ("output_dimension", "dimensions", 32),
        ("encoding_type", "embedding_type", "ubinary"),
        ("encoding_format", "embedding_type", "binary"),
    ],
)
def test_aliases_jina_accepts(url, alias, field, value):
    assert embed(url, **{alias: value})["data"] == embed(url, **{field: value})["data"]
    assert (
        embed(url, **{alias: value, field: value})["data"] == embed(url, **{field: value})["data"]
    )
    other = {"task": "text-matching", "dimensions": 64, "embedding_type": "float"}[field]
    status, body = call(url, "/v1/embeddings", {"input": TEXTS, alias: value, field: other})
    assert status == 400 and body["error"]["param"] == alias


def test_truncation_alias_and_truncate(url):
    long_text = "word " * 2000  # the fixture's context is 512 tokens
    status, body = call(url, "/v1/embeddings", {"input": [long_text]})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    cut = embed(url, input=[long_text], truncation=True)
    assert cut["data"] == embed(url, input=[long_text], truncate=True)["data"]
    assert cut["data"][0]["tokens"] == 512 < cut["data"][0]["input_tokens"]


def test_late_chunking_is_refused_for_v5(url):
    status, body = call(url, "/v1/embeddings", {"input": TEXTS, "late_chunking": True})
    assert status == 400
    assert body["error"]["param"] == "late_chunking"
    assert body["error"]["code"] == "unsupported_parameter"
    assert embed(url, late_chunking=False)["data"] == embed(url)["data"]


def test_text_objects_as_input(url):
    objects = embed(url, input=[{"text": t} for t in TEXTS])
    assert objects["data"] == embed(url)["data"]


# --- /v1/rerank ----------------------------------------------------------------------------

QUERY = "how do I rotate api keys"
DOCS = [
    "Rotate the api keys every month and revoke the old ones.",
    "Flour, water, salt and time make bread.",
    "The api keys live in the vault; rotation is scripted.",
    "A cat sat on the mat.",
]


def rerank(url, **body):
    status, out = call(url, "/v1/rerank", {"query": QUERY, "documents": DOCS, **body})
    assert status == 200, out
    return out


def test_rerank_envelope_and_defaults(url):
    out = rerank(url)
    assert set(out) == {"model", "usage", "results"}
    assert set(out["usage"]) == {"total_tokens"} and out["usage"]["total_tokens"] > 0
    # No top_n: every document, most relevant first, each with its text.
    assert sorted(r["index"] for r in out["results"]) == [0, 1, 2, 3]
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in out["results"]:
        assert set(r) == {"index", "relevance_score", "document"}
        assert r["document"] == {"text": DOCS[r["index"]]}


def test_rerank_top_n_and_its_alias_top_k(url):
    full = rerank(url)["results"]
    assert rerank(url, top_n=2)["results"] == full[:2]
    assert rerank(url, top_k=2)["results"] == full[:2]
    assert rerank(url, top_n=99)["results"] == full
    status, body = call(url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0})
    assert status == 400 and body["error"]["param"] == "top_n"


def test_rerank_without_documents_in_results(url):
    out = rerank(url, return_documents=False, top_n=3)
    assert [set(r) for r in out["results"]] == [{"index", "relevance_score"}] * 3


def test_rerank_document_objects_are_returned_whole(url):
    docs = [{"text": d, "id": f"note-{i}"} for i, d in enumerate(DOCS)]
    out = rerank(url, documents=docs, query={"text": QUERY})
    assert [r["index"] for r in out["results"]] == [r["index"] for r in rerank(url)["results"]]
    for r in out["results"]:
        assert r["document"] == docs[r["index"]]


def test_rerank_max_doc_length_cuts_documents_in_tokens(url):
    full = rerank(url)
    same = rerank(url, max_doc_length=10_000)
    assert same["results"] == full["results"]
    short = rerank(url, max_doc_length=2)
    assert short["usage"]["total_tokens"] < full["usage"]["total_tokens"]
    assert {r["index"]: r["relevance_score"] for r in short["results"]} != {
        r["index"]: r["relevance_score"] for r in full["results"]
    }
    # The documents come back as they were sent.
    assert all(r["document"] == {"text": DOCS[r["index"]]} for r in short["results"])
    status, body = call(url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "max_doc_length": 0})
    assert status == 400 and body["error"]["param"] == "max_doc_length"
