"""Markdown as notes are written: front matter, Obsidian links, embeds, callouts, tags, dates."""

from __future__ import annotations

import datetime as dt

import pytest

from jinaloc import notes
from jinaloc.chunking import PREFIX_CHARS, chunk_text, embed_text


def words(texts):
    return [len(t.split()) for t in texts]


def fm(text):
    return notes.front_matter(text.splitlines())


def test_yaml_front_matter_fields():
    meta = fm(
        "---\ntitle: Trip plan\naliases: [Japan trip, 日本]\ntags:\n  - travel\n  - '#plans/2024'\n"
        "date: 2024-03-05\ncreated: 2020-01-01\n---\nbody\n"
    )
    assert meta.title == "Trip plan"
    assert meta.aliases == ["Japan trip", "日本"]
    assert meta.tags == ["travel", "plans/2024"]
    assert meta.date == "2024-03-05"  # `date` before `created`
    assert meta.body_start == 9


def test_front_matter_variants():
    assert fm("---\ntags: a, b c\nalias: One\n---\n").tags == ["a", "b", "c"]
    assert fm("---\ntags: a, b c\nalias: One\n---\n").aliases == ["One"]
    assert fm("---\ncreated: 2023-02-01T10:30:00Z\n---\n").date == "2023-02-01"
    assert fm("---\nupdated: '2022-12-31'\n---\n").date == "2022-12-31"
    assert fm("---\ndate: someday\n---\n").date is None
    assert fm("---\nTitle: Upper\n...\n").title == "Upper"
    toml = fm('+++\ntitle = "Hugo post"\ntags = ["go", "web"]\ndate = 2021-06-01\n+++\nbody')
    assert (toml.title, toml.tags, toml.date, toml.body_start) == (
        "Hugo post",
        ["go", "web"],
        "2021-06-01",
        5,
    )


def test_broken_yaml_gives_no_metadata_but_stays_out_of_the_body():
    meta = fm("---\ntitle: Broken: yes: no\ntags: [unclosed\n---\nthe body\n")
    assert meta.tags == [] and meta.date is None
    assert meta.title == "Broken: yes: no"  # the title line still counts
    assert meta.body_start == 4
    assert fm("---\njust a rule, never closed\n\ntext").body_start == 0
    assert fm("---\n- a list\n- not a mapping\n---\n").tags == []


def test_inline_tags_outside_code():
    lines = [
        "#project and #a/b/ and #2024 (digits only: not a tag) and C#",
        "see http://x.org/#frag, &#39; and `#notatag`",
        "```",
        "#include <stdio.h>",
        "```",
        "# A heading, not a tag",
        "last #Project",
    ]
    assert notes.inline_tags(lines) == ["project", "a/b"]


@pytest.mark.parametrize(
    ("raw", "seen"),
    [
        ("see [[Other note]] now", "see Other note now"),
        ("see [[Other note|that one]] now", "see that one now"),
        ("at [[Note#Part#Sub]]", "at Note > Part > Sub"),
        ("block [[Note#^abc123]]", "block Note"),
        ("![[Embedded note]]", "Embedded note"),
        ("![[diagram.png|300]] text", " text"),
        ("![[paper.pdf#page=2]]", ""),
        ("a <!-- hidden\nnote --> b %% private %% c", "a  b  c"),
        ("> [!warning]- Careful here\n> body", "> Careful here\n> body"),
        ("> [!tip]\n> body", "> Tip\n> body"),
        ("> > [!note] Nested", "> > Nested"),
    ],
)
def test_readable_text(raw, seen):
    assert notes.readable(raw) == seen


def test_chunks_keep_the_file_as_it_is_and_embed_what_a_reader_sees():
    text = (
        "---\ntitle: Pasta\naliases: [Noodles]\ntags: [food]\n---\n"
        "Made with [[Flour|flour]] and #kitchen love.\n\n"
        "> [!note] Tip\n> salt the water <!-- todo -->\n"
    )
    doc = chunk_text(text, "pasta.md", words, budget=100)
    assert (doc.title, doc.aliases, doc.tags) == ("Pasta", ["Noodles"], ["food", "kitchen"])
    chunk = doc.chunks[0]
    assert (chunk.start_line, chunk.end_line) == (6, 9)
    assert "[[Flour|flour]]" in chunk.text and "<!-- todo -->" in chunk.text
    assert doc.embed_texts() == [
        "Pasta (Noodles)\n\nMade with flour and #kitchen love.\n\n> Tip\n> salt the water "
    ]


def test_plain_text_is_embedded_as_written():
    assert embed_text("t", (), "[[x]] <!-- y -->", name="a.txt") == "t\n\n[[x]] <!-- y -->"


def test_a_long_heading_is_cut_and_counted_against_the_room():
    heading = "word " * 200
    text = f"# {heading}\n\n" + "\n\n".join("body text here " * 5 for _ in range(20))
    doc = chunk_text(text, "long.md", words, budget=100, room=120)
    prefixes = [t.split("\n\n")[0] for t in doc.embed_texts()]
    assert all(len(p) <= PREFIX_CHARS for p in prefixes)
    assert max(words(doc.embed_texts())) <= 120


def test_date_args():
    today = dt.date(2024, 3, 31)
    assert notes.date_arg("2024-02-10", today) == "2024-02-10"
    assert notes.date_arg("2024-02", today) == "2024-02-01"
    assert notes.date_arg("2023", today) == "2023-01-01"
    assert notes.date_arg("7d", today) == "2024-03-24"
    assert notes.date_arg("2w", today) == "2024-03-17"
    assert notes.date_arg("1m", today) == "2024-02-28"
    assert notes.date_arg("1y", today) == "2023-03-28"
    with pytest.raises(ValueError, match="invalid date"):
        notes.date_arg("last tuesday", today)
