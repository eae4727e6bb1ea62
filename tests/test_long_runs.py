"""Long runs stay quiet and truthful: truncation reported once, chunks that fit the model."""

from __future__ import annotations

import logging

import pytest
from index_helpers import FakeEmbedder, have_gguf, make_notes, nano_embedder

from jinaloc.chunking import DocumentChunker
from jinaloc.index import Index
from jinaloc.index.store import Store
from jinaloc.index.write import Writer
from jinaloc.walk import WalkOptions


def test_embedder_collects_truncation_instead_of_warning(caplog):
    fake = FakeEmbedder(max_tokens=16)
    texts = ["short text", "word " * 40, "ok", "word " * 20]
    with caplog.at_level(logging.WARNING, logger="jinaloc"):
        fake.embed(texts)
    assert len(caplog.records) == 1  # a caller that does not collect is still warned
    caplog.clear()
    cut: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="jinaloc"):
        fake.embed(texts, truncated=cut)
    assert caplog.records == []
    assert cut == [(1, 42), (3, 22)]  # (index, tokens with BOS/EOS before the cut)


def test_a_run_reports_truncated_chunks_once_not_per_batch(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("jinaloc.index.write.STEP_CHUNKS", 16)  # several steps of 40 notes
    notes = tmp_path / "notes"
    make_notes(notes, 40, paragraphs=2, words=60)
    fake = FakeEmbedder(max_tokens=48)
    with Store.open(tmp_path / "index.db") as store:
        idx = Index(store, lambda *a, **k: fake)
        writer = Writer(store, lambda: (idx.settle(), idx.embedder))
        # A chunker that ignores the model's limit, so the embedder has to cut.
        writer.chunker().room = writer.chunker().budget = 200
        with caplog.at_level(logging.WARNING):
            report = writer.run([(notes, WalkOptions())])
    assert len(fake.calls) > 1  # several batches...
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # ...no warning
    data = report.to_json()
    assert data["truncated"] == len(report.truncated) == 40  # one chunk per note
    assert data["token_limit"] == 48 and data["truncated_longest"] > 48
    assert {f["path"] for f in data["truncated_files"]} == {str(p) for p in notes.rglob("*.md")}


def test_chunks_with_a_long_prefix_fit_the_fake_model(tmp_path):
    fake = FakeEmbedder(max_tokens=64)
    chunker = DocumentChunker(fake, 512)
    text = "# " + "heading " * 30 + "\n\n" + "\n\n".join("body words here " * 8 for _ in range(10))
    doc = chunker.chunk(text, "n.md")
    counts = fake.count_tokens(doc.embed_texts(), "document")
    assert max(counts) <= 64 and len(doc.chunks) > 3


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_a_long_heading_never_pushes_a_chunk_over_the_fixture_limit(tmp_path):
    embedder = nano_embedder()
    try:
        assert embedder.max_tokens == 512
        chunker = DocumentChunker(embedder, 512)
        heading = " ".join(f"section{i} about the quarterly budget review" for i in range(12))
        body = "\n\n".join(
            " ".join(f"line {p}.{w} of the long report on invoices and taxes" for w in range(12))
            for p in range(30)
        )
        text = f"---\ntitle: Finance\naliases: [Money, Budget]\n---\n# {heading}\n\n{body}\n"
        doc = chunker.chunk(text, "long.md")
        counts = embedder.count_tokens(doc.embed_texts(), "document")
        assert max(counts) <= 512
        # The budget is used, not a guess kept free: the longest is close to the limit.
        assert max(counts) > 400
        # The prefix alone is long: a fixed 32-token reserve would not have held it.
        prefix = doc.embed_texts()[0].split("\n\n")[0]
        assert embedder.count_tokens([prefix], "document")[0] > 40
    finally:
        embedder.close()


def test_the_run_summary_has_one_truncation_line(capsys, tmp_path):
    from jinaloc.cli.index import _summary
    from jinaloc.index.write import Report

    report = Report(added=2, truncated=[("/n/a.md", 900), ("/n/a.md", 700), ("/n/b.md", 600)])
    report.token_limit = 512
    report.left_out = {".svg": 324, ".css": 12}
    _summary(report, tmp_path / "index.db")
    err = capsys.readouterr().err
    assert err.count("truncated:") == 1
    assert "3 chunks in 2 files were cut to the model's 512 tokens (longest 900" in err
    assert "left out by type: 324 .svg, 12 .css" in err
