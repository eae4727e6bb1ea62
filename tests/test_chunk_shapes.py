"""Chunking degrades locally: random Markdown (hypothesis) and real-shaped notes.

The rules checked, for every chunk of every file:
- as embedded (title/heading line, a table's header rows, the text), it fits the room;
- it holds at least 1/MIN_SHARE of its budget (the budget less its title line), unless the
  chunk after it starts with a heading (a section or subsection begins; a small section is
  a small chunk) or it is the file's last chunk (the file, or its tail, is that small);
- together the chunks cover every line of the body that has text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, model_dir
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from index_helpers import have_gguf

from jinaloc.chunking import MIN_SHARE, chunk_text, join_prefix, prefix_of

DATA = Path(__file__).parent / "data"
_PIECES = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]|\w+|[^\w\s]|\s+")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]|$)")


def pieces(texts):
    """A tokenizer stand-in: a CJK character, a word, a punctuation mark or a run of
    blanks is a token, so joins (blank lines, prefixes) cost what they cost."""
    return [len(_PIECES.findall(t)) for t in texts]


WORDS = st.sampled_from(
    [
        "search", "note", "the", "vault", "[[Obsidian", "Sync]]", "[[官方同步简介|Obsidian Sync]]",
        "`tag:#work`", "#meeting", "https://example.com/a?b=c#frag", "搜索运算符", "描述",
        "在文件名中查找文本。匹配仓库中的任何文件。", "x" * 120, "-", "**bold**",
    ]
)  # fmt: skip


def _line(draw, lo=1, hi=12):
    return " ".join(draw(st.lists(WORDS, min_size=lo, max_size=hi)))


@st.composite
def elements(draw):
    kind = draw(st.sampled_from(["heading", "para", "list", "code", "table", "long", "cjk"]))
    if kind == "heading":
        return "#" * draw(st.integers(1, 4)) + " " + _line(draw, 1, 4)
    if kind == "para":
        return "\n".join(_line(draw) for _ in range(draw(st.integers(1, 5))))
    if kind == "list":
        return "\n".join(f"- {_line(draw, 1, 8)}" for _ in range(draw(st.integers(1, 8))))
    if kind == "code":
        body = "\n".join(_line(draw, 1, 6) for _ in range(draw(st.integers(0, 30))))
        return f"```\n{body}\n```"
    if kind == "table":  # wide and padded, like the Obsidian help's operator tables
        cols = draw(st.integers(2, 4))
        width = draw(st.integers(5, 300))
        row = lambda cells: "| " + " | ".join(c.ljust(width) for c in cells) + " |"  # noqa: E731
        head = row([_line(draw, 1, 2) for _ in range(cols)])
        rule = "| " + " | ".join("-" * width for _ in range(cols)) + " |"
        rows = [
            row([_line(draw, 1, 6) for _ in range(cols)]) for _ in range(draw(st.integers(1, 25)))
        ]
        return "\n".join([head, rule, *rows])
    if kind == "long":
        return _line(draw, 60, 200)
    return "".join(
        draw(
            st.lists(
                st.sampled_from("搜索是一个核心插件帮助你通过运算符在仓库中查找数据。"),
                min_size=1,
                max_size=900,
            )
        )
    )


@st.composite
def notes(draw):
    front = draw(
        st.sampled_from(
            ["", "---\ntitle: 搜索\ntags: [help]\n---\n", "---\naliases: [Find]\n---\n"]
        )
    )
    body = "\n\n".join(draw(st.lists(elements(), min_size=0, max_size=14)))
    return front + body + "\n"


def prefix_cost(doc, count, heading) -> int:
    return count([join_prefix(prefix_of(doc.title, heading, doc.aliases), "")])[0]


def in_scope(text: str, name: str, count, budget: int, room: int) -> bool:
    """Out of scope: a title/heading line (at most PREFIX_CHARS) taking half the room."""
    doc = chunk_text(text, name, count, budget, room=room)
    return all(prefix_cost(doc, count, c.heading) * 2 <= room for c in doc.chunks)


def check(text: str, name: str, count, budget: int, room: int) -> list:
    doc = chunk_text(text, name, count, budget, room=room)
    lines = text.splitlines()
    embedded = count(doc.embed_texts())
    assert max(embedded, default=0) <= room, "a chunk is over the model's limit as embedded"
    for i, c in enumerate(doc.chunks):
        cap = min(budget, room - prefix_cost(doc, count, c.heading))
        assert all(
            any(x in line for line in lines[c.start_line - 1 : c.end_line])
            for x in c.text.splitlines()
        )
        if c.tokens * MIN_SHARE >= cap or i == len(doc.chunks) - 1:
            continue
        assert _HEADING.match(lines[doc.chunks[i + 1].start_line - 1]), (
            f"chunk {i} of {len(doc.chunks)} has {c.tokens} tokens of {cap}, not before a heading"
        )
    covered = set()
    for c in doc.chunks:
        covered.update(range(c.start_line, c.end_line + 1))
    start = 0
    if lines and lines[0] == "---":
        start = lines.index("---", 1) + 1
    for n, line in enumerate(lines[start:], start + 1):
        assert n in covered or not line.strip() or set(line.strip()) <= set("-*_ "), (
            f"line {n} lost"
        )
    return doc.chunks


# derandomize: CI runs the same examples every time; a new seed is a deliberate change.
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(text=notes(), budget=st.integers(32, 600), slack=st.integers(0, 200))
def test_random_markdown_chunks_fit_cover_and_are_not_fragments(text, budget, slack):
    assume(in_scope(text, "note.md", pieces, budget, budget + slack))
    check(text, "note.md", pieces, budget, budget + slack)


@pytest.mark.xfail(
    strict=True,
    reason="known: a chunk's title line and text cost one token more"
    " together than apart (a URL cut mid-way); found by a random seed of the test above",
)
def test_a_chunk_whose_joined_title_costs_one_more_token():
    text = (ROOT / "tests" / "data" / "chunk-over-by-one.md").read_text()
    check(text, "note.md", pieces, 32, 32)


def fixture_counter():
    """Raw token counts as DocumentChunker takes them from the tiny nano fixture's tokenizer
    (trained on a few KB of English: CJK, blank runs and dashes cost it several tokens)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir("nano") / "tokenizer.json"))
    overhead = len(tok.encode("Document: ").ids)

    def count(texts):
        return (
            [
                max(len(e.ids) - overhead, 0)
                for e in tok.encode_batch([f"Document: {t}" for t in texts])
            ]
            if texts
            else []
        )

    return count


FIXTURE_COUNT = fixture_counter()


@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(text=notes(), budget=st.integers(64, 512))
def test_random_markdown_with_the_fixture_tokenizer(text, budget):
    assume(in_scope(text, "note.md", FIXTURE_COUNT, budget, budget))
    check(text, "note.md", FIXTURE_COUNT, budget, budget)


def test_one_wide_table_does_not_fragment_the_file():
    """The shape of the Obsidian help's 'Search' page (zh): prose with wikilinks, then an
    operator table padded to 300+ characters a row, then more prose (tests/data/search-zh.md,
    written for this test in that shape). At a 512-token model limit the page used to become
    hundreds of chunks of 9 tokens or fewer, fragments like `[[Obsidian`."""
    text = (DATA / "search-zh.md").read_text()
    check(text, "搜索.md", pieces, 512, 512)
    # With the fixture's tokenizer, the header and delimiter rows alone are ~400 tokens.
    chunks = check(text, "搜索.md", FIXTURE_COUNT, 505, 505)
    sizes = [c.tokens for c in chunks]
    assert len(chunks) <= 16, sizes
    # The prose is whole: no chunk starts or ends inside a wikilink.
    for c in chunks:
        assert c.text.count("[[") == c.text.count("]]"), c.text
    # The table's rows are in chunks of their own, each well over a fragment.
    table = [c for c in chunks if "| `" in c.text]
    assert table and all(c.tokens * MIN_SHARE >= 400 for c in table[:-1])
    # The header is wider than 1/8 of the budget: not repeated with every piece.
    assert not any(c.context for c in chunks)


def test_a_short_table_header_is_repeated_with_each_piece():
    rows = "".join(f"| `op{i}:` | find text number {i} in the file |\n" for i in range(60))
    text = "# Ops\n\n| Operator | Description |\n| --- | --- |\n" + rows
    doc = chunk_text(text, "ops.md", pieces, 200, room=220)
    assert len(doc.chunks) > 2
    for chunk, embedded in zip(doc.chunks[1:], doc.embed_texts()[1:], strict=True):
        assert "| Operator | Description |\n| --- | --- |" in embedded
        assert not chunk.text.startswith("| Operator")
    assert max(pieces(doc.embed_texts())) <= 220


def test_one_long_block_leaves_the_rest_of_the_file_packed_as_before():
    prose = "\n\n".join(f"Paragraph {i} about notes and the vault." for i in range(30))
    long = " ".join(["word"] * 3000)
    alone = chunk_text(f"# A\n\n{prose}\n", "a.md", pieces, 300, room=320)
    both = chunk_text(f"# A\n\n{long}\n\n{prose}\n", "a.md", pieces, 300, room=320)
    # The prose packs as it did without the long paragraph (it may share a chunk with its
    # last piece): not split finer because of it.
    assert len(both.chunks) <= len(alone.chunks) + len(range(0, 6000, 300 - 300 // 8)) + 1
    assert min(c.tokens for c in both.chunks[:-1]) >= 300 // MIN_SHARE
    assert sum(c.tokens for c in both.chunks) < 1.3 * (6000 + sum(c.tokens for c in alone.chunks))


def test_a_small_chunk_takes_the_first_piece_of_a_block_that_does_not_fit():
    big = " ".join(["word"] * 190)  # fits a chunk alone, not after the heading and intro
    text = f"# T\n\nIntro.\n\n{big}\n\nTail words here.\n"
    doc = chunk_text(text, "t.md", pieces, 200)
    assert doc.chunks[0].tokens * MIN_SHARE >= 200  # not the intro alone
    assert doc.chunks[-1].end_line == 7


def test_a_long_line_cut_between_words_keeps_wikilinks_whole():
    line = " ".join(f"see [[Obsidian Sync {i}|Obsidian 同步 {i}]] and" for i in range(80))
    doc = chunk_text(f"# Links\n\n{line}\n", "l.md", pieces, 120)
    assert len(doc.chunks) > 3
    for c in doc.chunks:
        assert c.text.count("[[") == c.text.count("]]"), c.text


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_indexing_the_search_shaped_page_neither_fragments_nor_truncates(tmp_path):
    """End to end on the fixture model (a 512-token limit): the page that became hundreds
    of 9-token chunks, with truncation still reported."""
    from index_helpers import nano_embedder

    from jinaloc.index import Index

    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "搜索.md").write_text((DATA / "search-zh.md").read_text())
    with Index.open(tmp_path / "i.db", create=True, loader=lambda *a, **k: nano_embedder()) as idx:
        report = idx.update([vault])
        sizes = [
            n for (n,) in idx.store.conn.execute("SELECT tokens FROM chunks ORDER BY start_line")
        ]
    assert report.truncated == [] and report.added == 1
    assert 3 <= len(sizes) <= 16 and min(sizes[:-1]) * MIN_SHARE >= 400, sizes
