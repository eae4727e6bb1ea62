"""Markdown-aware chunking by token budget, with a word counter instead of a model."""

from __future__ import annotations

from jinaloc.chunking import chunk_text, embed_text


def words(texts):
    return [len(t.split()) for t in texts]


NOTE = """---
title: "Kitchen notes"
tags: [food]
---
# Cooking

Intro one two three.

## Pasta

Boil water. Add salt.

- item one
- item two

- item three
  continued

### Sauce

Tomatoes and basil.

```python
def f():

    return 1
```

## Bread

Flour water yeast.
"""


def test_blocks_headings_and_line_ranges():
    doc = chunk_text(NOTE, "k.md", words, budget=1000)
    assert doc.title == "Kitchen notes"
    # Everything under the first heading fits: one chunk, front matter left out.
    assert [(c.start_line, c.end_line, c.heading) for c in doc.chunks] == [(5, 31, ("Cooking",))]
    lines = NOTE.splitlines()
    first = doc.chunks[0]
    assert first.text.splitlines()[0] == lines[first.start_line - 1] == "# Cooking"
    assert first.text.splitlines()[-1] == lines[first.end_line - 1] == "Flour water yeast."
    assert "tags" not in first.text


def test_a_sibling_section_starts_a_new_chunk_subsections_join():
    text = "## A\n\na text\n\n### A1\n\nsub text\n\n## B\n\nb text\n\n# C\n\nc text\n"
    doc = chunk_text(text, "n.md", words, budget=1000)
    assert [(c.start_line, c.end_line, c.heading) for c in doc.chunks] == [
        (1, 7, ("A",)),
        (9, 11, ("B",)),
        (13, 15, ("C",)),
    ]


def test_fenced_code_and_lists_stay_whole():
    doc = chunk_text(NOTE, "k.md", words, budget=14)
    texts = [c.text for c in doc.chunks]
    fence = "```python\ndef f():\n\n    return 1\n```"
    assert any(fence in t for t in texts)
    assert any("- item one\n- item two\n\n- item three\n  continued" in t for t in texts)
    for c in doc.chunks:
        assert c.tokens <= 14 + 2  # a carried heading may top a chunk up slightly
    (code,) = [c for c in doc.chunks if fence in c.text]
    assert code.heading == ("Cooking", "Pasta", "Sauce")


def test_a_heading_is_never_left_alone_at_the_end_of_a_chunk():
    doc = chunk_text(NOTE, "k.md", words, budget=14)
    for c in doc.chunks:
        assert not c.text.splitlines()[-1].startswith("#")


def test_oversized_paragraph_is_split_with_overlap():
    text = "# T\n\n" + " ".join(f"w{i}" for i in range(100)) + "\n"
    # Cut between words, a word and its space are counted as 2 tokens: 8 tokens, 4 words.
    doc = chunk_text(text, "t.md", words, budget=20, overlap=8)
    pieces = [c.text.replace("# T\n\n", "").split() for c in doc.chunks]
    assert pieces[0][0] == "w0" and pieces[-1][-1] == "w99"
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert a[-4:] == b[:4]  # 4 words of overlap
    assert all(c.tokens <= 20 for c in doc.chunks)
    assert all(c.start_line == c.end_line == 3 for c in doc.chunks[1:])
    assert doc.chunks[0].start_line == 1  # the heading goes with the first piece


def test_oversized_code_is_split_by_lines():
    code = "\n".join(f"x{i} = {i}" for i in range(60))
    text = f"```\n{code}\n```\n"
    doc = chunk_text(text, "c.md", words, budget=20, overlap=6)
    assert len(doc.chunks) > 3
    first, second = doc.chunks[0], doc.chunks[1]
    assert first.start_line == 1
    assert second.start_line <= first.end_line  # overlapping lines
    assert doc.chunks[-1].end_line == 62
    for c in doc.chunks:
        assert len(c.text.splitlines()) == c.end_line - c.start_line + 1


def test_one_huge_word_is_cut_by_characters():
    def chars(texts):
        return [len(t) // 4 for t in texts]

    blob = "A" * 1000
    doc = chunk_text(blob, "blob.txt", chars, budget=50, overlap=0)
    assert "".join(c.text for c in doc.chunks) == blob
    assert all(chars([c.text])[0] <= 50 for c in doc.chunks)


def test_titles():
    assert chunk_text("# Real Title\n\ntext", "x.md", words, 100).title == "Real Title"
    assert chunk_text("no heading here", "my-note.md", words, 100).title == "my-note"
    assert chunk_text("print(1)\n", "tool.py", words, 100).title == "tool.py"
    assert chunk_text("#+TITLE: Org Doc\n* A\ntext", "a.org", words, 100).title == "Org Doc"
    assert chunk_text("= Adoc Doc\n\ntext", "a.adoc", words, 100).title == "Adoc Doc"


def test_code_comments_are_not_headings():
    doc = chunk_text("# comment\nx = 1\n\n# another\ny = 2\n", "a.py", words, 100)
    assert [c.heading for c in doc.chunks] == [()]
    assert doc.title == "a.py"


def test_org_headings():
    doc = chunk_text("* One\ntext\n** Two\nmore\n* Three\nlast\n", "n.org", words, 100)
    assert [c.heading for c in doc.chunks] == [("One",), ("Three",)]


def test_empty_or_front_matter_only_gives_no_chunks():
    assert chunk_text("---\ntitle: x\n---\n", "a.md", words, 100).chunks == []


def test_embed_text_format():
    assert embed_text("Cooking", ("Cooking", "Pasta"), "Boil.") == "Cooking > Pasta\n\nBoil."
    assert embed_text("Kitchen", ("Cooking", "Pasta"), "Boil.") == (
        "Kitchen > Cooking > Pasta\n\nBoil."
    )
    assert embed_text("tool.py", (), "x = 1") == "tool.py\n\nx = 1"
