"""What issue 22 fixed in ranking: CJK questions, stems beside exact identifiers, files ranked
on their whole text, enough rerank candidates for k files, and queries of only common words.
Indexes are built with the model-free FakeEmbedder; lexical search needs no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from index_helpers import FakeEmbedder, make_notes
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.index import Index, lexical
from jinaloc.index.store import _connect


def cli(*args, ok=(0,)):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code in ok, (r.exit_code, r.stdout, r.stderr)
    return r


def build(notes: Path, db: Path, chunk_tokens: int = 512) -> Path:
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([notes], chunk_tokens=chunk_tokens)
    return db


def lexical_paths(db: Path, query: str, *args) -> list[str]:
    r = cli("search", "--db", db, "--json", "--mode", "lexical", *args, "--", query)
    return [Path(row["path"]).name for row in json.loads(r.stdout)]


class Rows:
    """chunks_fts over a minimal chunks table, one chunk per file."""

    def __init__(self, docs: dict[int, str]):
        self.conn = _connect(":memory:")
        self.conn.execute(lexical.fts_schema(self.conn.execute("SELECT sqlite_version()")
                                             .fetchone()[0]))  # fmt: skip
        self.conn.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, file_id INTEGER)")
        for i, text in docs.items():
            self.conn.execute("INSERT INTO chunks VALUES (?, ?)", (i, i))
            self.conn.execute(lexical.INSERT_SQL, (i, *lexical.index_fields("", [], text)))

    def ids(self, query: str) -> list[int]:
        return [i for i, _ in lexical.search(self.conn, query, 100)]


# --- CJK questions ------------------------------------------------------------------------

ZH = {
    1: "《战国无双3》是由光荣和ω-force开发的战国无双系列的正统续作。",
    2: "战国时代的历史很复杂，许多公司开发过相关游戏。",
    3: "光荣公司总部位于日本横滨。",
    4: "今天天气很好，我们去公园散步吧。",
}


def test_a_chinese_question_ranks_the_paragraph_sharing_most_of_its_bigrams_first():
    rows = Rows(ZH)
    # No paragraph holds the question verbatim: before, nothing matched.
    assert rows.ids("《战国无双3》是由哪两个公司合作开发的？")[0] == 1
    assert rows.ids("光荣公司的总部在哪里？")[0] == 3
    # Split only past SHORT_RUN characters: 1-4 stay exact.
    assert rows.ids("战国无双") == [1]
    assert rows.ids("公司") == [2, 3] or set(rows.ids("公司")) == {2, 3}
    assert rows.ids("开司") == []  # not in any text: no partial match for a short term


@pytest.mark.parametrize("query", ["战国无双3", "无双3", "双3", "《战国无双3》", "3》是由"])
def test_a_cjk_run_next_to_digits_and_punctuation_is_found(query):
    assert Rows(ZH).ids(query) == [1]


def test_mixed_terms_keep_working():
    rows = Rows({1: "Python教程 第3章", 2: "第4章 Python"})
    assert rows.ids("Python教程") == [1]
    assert rows.ids("第3章") == [1]
    assert rows.ids("第4章") == [2]


def test_japanese_kana_kanji_and_korean_questions():
    rows = Rows(
        {
            1: "東京タワーの高さは333メートルです。",
            2: "京都の寺は古い。",
            3: "데이터베이스를 설계하는 방법을 배웁니다.",
            4: "오늘은 날씨가 좋습니다.",
        }
    )
    assert rows.ids("東京タワーの高さはどれくらいですか")[0] == 1
    assert rows.ids("タワー") == [1]
    assert rows.ids("京都") == [2]
    assert rows.ids("데이터베이스 설계 방법은 무엇입니까")[0] == 3
    assert rows.ids("설계") == [3]


# --- stems and exact identifiers ----------------------------------------------------------


def test_stems_meet_other_forms_and_quotes_stay_exact():
    rows = Rows({1: "I get headaches every morning", 2: "the headache is gone", 3: "no pain"})
    assert set(rows.ids("headache")) == {1, 2}
    assert set(rows.ids("headaches")) == {1, 2}
    assert rows.ids('"headaches"') == [1]
    assert lexical.stems("running dogs") == "run dog"
    assert lexical.stems("dog") == ""  # only stems that differ from their word are stored


def test_the_language_of_a_chunk_picks_its_stemmer():
    assert lexical.language("Die Häuser sind alt und schön") == "german"
    assert lexical.language("plain words only") == "english"
    rows = Rows({1: "Die Häuser sind alt und schön", 2: "the house is old"})
    assert rows.ids("Haus") == [1]
    assert rows.ids("houses") == [2]


IDENTIFIERS = {
    1: "Use git push --force-with-lease to avoid clobbering a teammate's commits.",
    2: "The lease on the flat ends in May; we were forced to move with our things.",
    3: "Fetching failed with ERR_CONN_RESET after the proxy restarted.",
    4: "Reset the connection errors counter; connections reset nightly by the errors job.",
    5: "Templates in C++ need the header.",
    6: "Notes on C, on compilers and on the C standard library, C and C again.",
}


@pytest.mark.parametrize(("query", "first"), [("--force-with-lease", 1), ("ERR_CONN_RESET", 3),
                                               ("C++", 5)])  # fmt: skip
def test_identifiers_rank_their_notes_first(tmp_path, query, first):
    notes = tmp_path / "notes"
    notes.mkdir()
    for i, text in IDENTIFIERS.items():
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\n{text}\n")
    db = build(notes, tmp_path / "index.db")
    assert lexical_paths(db, query)[0] == f"n{first}.md"


# --- files ranked on their whole text -----------------------------------------------------


def test_a_note_split_into_chunks_is_ranked_on_all_its_words(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    # Each query word is in a different section of the long note: no single chunk holds
    # more than one, while the rival holds two of three in its one chunk.
    filler = " ".join(f"filler{i}" for i in range(35))
    (notes / "long.md").write_text(
        f"# Trip\n\n## Day 1\n\nkyoto {filler}\n\n## Day 2\n\nshrine {filler}\n\n"
        f"## Day 3\n\nmatcha {filler}\n"
    )
    (notes / "rival.md").write_text(f"# Other\n\nkyoto shrine {filler}\n")
    for i in range(8):
        (notes / f"other{i}.md").write_text(f"# Other {i}\n\n{filler} {filler} {filler}\n")
    db = build(notes, tmp_path / "index.db", chunk_tokens=48)
    rows = json.loads(
        cli("search", "--db", db, "--json", "--mode", "lexical", "kyoto shrine matcha").stdout
    )
    assert Path(rows[0]["path"]).name == "long.md"
    # The hit still points at the lines of its best chunk, which holds a query word.
    lines = (notes / "long.md").read_text().splitlines()
    shown = "\n".join(lines[rows[0]["start_line"] - 1 : rows[0]["end_line"]])
    assert any(w in shown for w in ("kyoto", "shrine", "matcha"))
    assert rows[0]["text"] in (notes / "long.md").read_text()
    chunks = json.loads(
        cli(
            "search",
            "--db",
            db,
            "--json",
            "--mode",
            "lexical",
            "--all-chunks",
            "kyoto shrine matcha",
        ).stdout  # fmt: skip
    )
    assert Path(chunks[0]["path"]).name == "rival.md"  # chunk by chunk, the rival wins


# --- rerank candidates and common words ---------------------------------------------------


class FirstWordsReranker:
    """Scores a text by how early it is in the alphabet: any order unlike the first stage."""

    def score(self, query, texts, instruction=None, progress=None):
        return [1.0 / (1 + sum(map(ord, t[:8])) % 97) for t in texts]


def test_rerank_returns_k_files_when_chunks_of_few_files_lead(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 12, paragraphs=6, words=40)
    db = build(notes, tmp_path / "index.db", chunk_tokens=48)
    with Index.open(db, loader=lambda *a, **k: FakeEmbedder()) as idx:
        first = idx.search("pasta sauce tomato", 3, mode="lexical", all_chunks=True)
        assert len({h.file_id for h in first}) < 3  # k chunks span fewer than k files
        hits = idx.search("pasta sauce tomato", 3, mode="lexical", reranker=FirstWordsReranker())
        assert len(hits) == len({h.file_id for h in hits}) == 3
        hits = idx.search("pasta sauce tomato", 3, mode="lexical", reranker=FirstWordsReranker(),
                          all_chunks=True)  # fmt: skip
        assert len(hits) == 3


def test_a_query_of_only_common_words_is_no_result_with_a_note(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 12)
    db = build(notes, tmp_path / "index.db")
    r = cli("search", "--db", db, "--mode", "lexical", "note", ok=(1,))
    assert r.stdout == "" and "too common to rank by" in r.stderr
    # With a rarer word beside it, the common one no longer empties the result.
    assert lexical_paths(db, "note pasta")
    # A tiny index keeps such rows: there, a word in most chunks is all there is.
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.md").write_text("# A\n\nthe only note\n")
    assert lexical_paths(build(small, tmp_path / "small.db"), "note") == ["a.md"]
