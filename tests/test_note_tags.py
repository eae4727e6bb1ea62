"""Inline tags as Obsidian reads them, on notes shaped like the Obsidian help vault's pages
(written for these tests): links to headings, anchors, URLs and code are not tags; and
`jinaloc search --tag` end to end."""

from __future__ import annotations

import json

import pytest
from conftest import model_dir
from index_helpers import cli, have_gguf

from jinaloc.chunking import meta_of
from jinaloc.notes import inline_tags

# Shaped like the help's "Quick switcher" page: a heading linked from its own page.
QUICK_SWITCHER = """---
permalink: plugins/quick-switcher
---
Quick switcher lets you find and open a note by its name.

## Open Quick switcher

- In the ribbon, click **Open Quick switcher** ![[lucide-file-search.svg#icon]];
- Or press `Ctrl+O` (`#open` is not a tag in code).

1. [[#Open Quick switcher]].
2. Type part of a name; see [[Search#Search operators|operators]] and [[Sync#Set up]].
3. Read the [changelog](https://obsidian.md/changelog#Set) or the [Ack](#ack) list.
"""

# Shaped like the help's "Tags" page: real tags next to the things that are not.
TAGS = """---
aliases: [How to/Working with tags]
tags: [docs]
---
To create a tag, enter a hash symbol (`#`) followed by a keyword, such as `#meeting`.

Tags must have a non-numerical character: #1984 is not a tag, but #y1984 is.

- #camelCase
- #kebab-case and #inbox/to-read
- #Tag and #TAG are the same tag. Emoji too: #🚀launch

> [!example] CSS
> ```css
> .red-border { border-color: #ff0000; }
> ```

Playground: https://www.typescriptlang.org/play?#code/C4TwDgpgBAKhDOwCGAbAJgZQHYEs
Entities &#39;quoted&#39; and <a href="#section">anchors</a>, a path a/#b, issue#12.
%% #draft is a comment %%
"""

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]


def test_links_anchors_urls_and_code_are_not_tags():
    lines = QUICK_SWITCHER.splitlines()
    assert inline_tags(lines) == []
    assert meta_of(QUICK_SWITCHER, "Quick switcher.md").tags == []


def test_tags_as_obsidian_defines_them():
    meta = meta_of(TAGS, "Tags.md")
    # Front matter tags first, then the inline ones in order, without repeats.
    assert meta.tags == [
        "docs",
        "y1984",
        "camelCase",
        "kebab-case",
        "inbox/to-read",
        "Tag",
        "🚀launch",
    ]


def test_a_tag_after_a_link_or_code_on_the_same_line_is_still_a_tag():
    lines = ["See [[Note#Part]] #real and `code` #also, [x](#y) #third."]
    assert inline_tags(lines) == ["real", "also", "third"]


@pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
def test_search_by_tag_returns_only_tagged_notes(tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "Quick switcher.md").write_text(QUICK_SWITCHER)
    (vault / "Tags.md").write_text(TAGS)
    (vault / "Meeting.md").write_text("# Meeting\n\nOpen items for the week. #open #work\n")
    db = tmp_path / "i.db"
    cli("index", vault, "--db", db, *MODEL, "-q")
    for mode in ("lexical", "hybrid"):
        rows = json.loads(
            cli("search", "open", "--tag", "open", "--db", db, "--mode", mode, "--json").stdout
        )
        assert [r["path"] for r in rows] == [str(vault / "Meeting.md")]
    result = cli("search", "switcher", "--tag", "ack", "--db", db, "--mode", "lexical", ok=(1,))
    assert result.stdout == ""
    rows = json.loads(
        cli(
            "search", "tag", "--tag", "kebab-case", "--db", db, "--mode", "lexical", "--json"
        ).stdout
    )
    assert [r["path"] for r in rows] == [str(vault / "Tags.md")]


def test_an_older_index_reads_its_tags_again_without_re_embedding(tmp_path):
    from jinaloc.index.store import _connect

    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "Quick switcher.md").write_text(QUICK_SWITCHER)
    (vault / "Meeting.md").write_text("# Meeting\n\nOpen items for the week. #open #work\n")
    db = tmp_path / "i.db"
    cli("index", vault, "--db", db, *MODEL, "-q")
    # As schema 6 left it: the old rule had read `#Open` of `[[#Open Quick switcher]]`.
    conn = _connect(str(db))
    conn.execute(
        "INSERT INTO file_tags(file_id, tag) SELECT id, 'open' FROM files WHERE path LIKE ?",
        ("%Quick switcher.md",),
    )
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    before = cli("search", "open", "--tag", "open", "--db", db, "--mode", "lexical", "--json")
    assert len(json.loads(before.stdout)) == 2  # the old tags serve until the next update
    status = json.loads(cli("status", "--db", db, "--json").stdout)
    assert status["files"] == 2
    report = json.loads(cli("index", "--db", db, *MODEL, "--json", "-q").stdout)
    assert report["chunks_embedded"] == 0  # metadata only: nothing embedded again
    rows = json.loads(
        cli("search", "open", "--tag", "open", "--db", db, "--mode", "lexical", "--json").stdout
    )
    assert [r["path"] for r in rows] == [str(vault / "Meeting.md")]
