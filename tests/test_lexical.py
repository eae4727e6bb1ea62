"""The lexical index on real SQLite FTS5: folding, CJK substrings, query safety, bm25 order."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jinaloc.index import lexical
from jinaloc.index.store import MIGRATIONS, _connect


class Index:
    """chunks_fts beside a minimal chunks table (id, file_id), as the store will hold them."""

    def __init__(self, conn):
        self.conn = conn
        version = conn.execute("SELECT sqlite_version()").fetchone()[0]
        conn.execute(lexical.fts_schema(version))
        conn.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL)")

    def add(self, chunk_id: int, text: str, title: str = "", heading=(), file_id: int = 1):
        self.conn.execute("INSERT INTO chunks(id, file_id) VALUES (?, ?)", (chunk_id, file_id))
        self.conn.execute(
            lexical.INSERT_SQL, (chunk_id, *lexical.index_fields(title, list(heading), text))
        )

    def ids(self, query: str, **kw) -> list[int]:
        return [i for i, _ in lexical.search(self.conn, query, 100, **kw)]


@pytest.fixture
def index():
    conn = _connect(":memory:")
    yield Index(conn)
    conn.close()


def test_schema_is_contentless_with_delete_on_new_sqlite():
    assert "contentless_delete=1" in lexical.fts_schema("3.43.0")
    assert "content=''" in lexical.fts_schema("3.51.1")
    # Older SQLite: a table with its own content, still deletable by rowid.
    assert "content" not in lexical.fts_schema("3.42.9")


def test_delete_by_rowid(index):
    index.add(1, "alpha beta")
    index.add(2, "alpha gamma")
    index.conn.execute("DELETE FROM chunks_fts WHERE rowid = 1")
    assert index.ids("alpha") == [2]


@pytest.mark.skipif(
    sqlite3.sqlite_version_info >= (3, 43), reason="the stdlib SQLite is new: nothing to fall back"
)
def test_old_sqlite_fallback_schema_deletes_by_rowid():
    conn = sqlite3.connect(":memory:")
    index = Index(conn)
    index.add(1, "数据库 alpha")
    index.add(2, "alpha")
    conn.execute("DELETE FROM chunks_fts WHERE rowid = 1")
    assert index.ids("alpha") == [2]
    assert index.ids("数据") == []


def test_rebuild_fills_from_stored_chunks_and_delete_by_file():
    conn = _connect(":memory:")
    MIGRATIONS[0](conn)  # the schema-v1 tables, as an old index has them
    conn.execute(
        "INSERT INTO files(id, path, root, rel, hash, size, mtime_ns, title, tokens, indexed_at)"
        " VALUES (1, '/n/a.md', '/n', 'a.md', 'h', 1, 1, '数据手册', 1, 0),"
        " (2, '/n/b.md', '/n', 'b.md', 'h', 1, 1, 'Other', 1, 0)"
    )
    for cid, fid, heading, text in [
        (1, 1, ["Intro"], "plain text"),
        (2, 1, ["検索"], "more"),
        (3, 2, [], "Café text"),
    ]:
        conn.execute(
            "INSERT INTO chunks(id, file_id, seq, start_line, end_line, heading, text, tokens,"
            " hash, embedding) VALUES (?, ?, 0, 1, 1, ?, ?, 1, 'h', x'00')",
            (cid, fid, json.dumps(heading), text),
        )
    assert lexical.recreate(conn) == 3
    assert lexical.rebuild(conn) == 3  # again: replaces, does not duplicate
    assert conn.execute("SELECT count(*) FROM files_fts").fetchone()[0] == 2
    # One row per file: words from two chunks meet in it, ranked as one document.
    assert lexical.search(conn, "plain more", 10, files=True)[0][0] == 1
    assert [i for i, _ in lexical.search(conn, "cafe", 10, files=True)] == [2]
    assert sorted(i for i, _ in lexical.search(conn, "数据", 10)) == [1, 2]
    assert [i for i, _ in lexical.search(conn, "検索", 10)] == [2]
    assert [i for i, _ in lexical.search(conn, "text", 10, file_ids=[2])] == [3]
    conn.execute(lexical.DELETE_FILE_SQL, (1,))
    conn.execute(lexical.FILE_DELETE_SQL, (1,))
    assert lexical.search(conn, "数据", 10) == []
    assert lexical.search(conn, "数据", 10, files=True) == []
    assert [i for i, _ in lexical.search(conn, "cafe", 10)] == [3]
    conn.close()


def test_nasty_inputs_are_searched_as_words(index):
    index.add(1, "Templates in C++ and C#")
    index.add(2, "pass --flag to the tool")
    index.add(3, "the key foo:bar is set")
    index.add(4, "stand near the door")
    index.add(5, "an unbalanced quote")
    index.add(6, "rock and roll or not")
    assert index.ids("C++") == [1]
    assert index.ids("-flag") == [2]
    assert index.ids("foo:bar") == [3]
    assert index.ids("NEAR") == [4]
    assert index.ids("NEAR(door stand)") == [4]
    assert index.ids('"unbalanced') == [5]
    assert index.ids("unbalanced\"'") == [5]
    assert set(index.ids("AND")) == {1, 6}
    assert index.ids("NOT") == [6]
    assert index.ids("roll^") == [6]
    assert index.ids("{door}") == [4]


NO_WORDS = ["", "   ", "*", "**", "!!!", "😀", "🎉🔥", '""', '" "', "-", "+"]


@pytest.mark.parametrize("query", NO_WORDS)
def test_input_without_words_is_no_query(index, query):
    index.add(1, "anything at all")
    assert lexical.expression(index.conn, query) is None
    assert index.ids(query) == []


def test_emoji_next_to_words(index):
    index.add(1, "party time")
    assert index.ids("🎉party") == [1]


def test_case_and_diacritics_are_folded(index):
    index.add(1, "a cafe downtown")
    index.add(2, "CAFÉ MENU")
    index.add(3, "Café au lait")
    index.add(4, "Zürich and Ångström")
    index.add(5, "café-free tea")
    for query in ("Café", "cafe", "CAFE", "cafè"):
        assert set(index.ids(query)) == {1, 2, 3, 5}, query
    assert index.ids("zurich") == [4]
    assert index.ids("ANGSTROM") == [4]


def test_marks_are_letters_and_vowel_points_are_dropped(index):
    index.add(1, "हिन्दी भाषा")
    index.add(2, "اللُّغَةُ العَرَبِيَّة")
    index.add(3, "שָׁלוֹם עולם")
    index.add(4, "हिंदू")
    assert index.ids("हिन्दी") == [1]
    assert index.ids("भाषा") == [1]
    assert index.ids("العربية") == [2]  # written without harakat
    assert index.ids("العَرَبِيَّة") == [2]
    assert index.ids("שלום") == [3]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("ไทย", {1}), ("ภาษา", {1, 2}), ("ง่าย", {1}), ("ภาษาไทยง่าย", {1}), ("ลาว", {2})],
)
def test_thai_and_lao_substrings(index, query, expected):
    index.add(1, "ภาษาไทยง่ายมาก")
    index.add(2, "ภาษาลาว")
    index.add(3, "ພາສາລາວ")
    assert set(index.ids(query)) == expected


def test_full_width_letters_are_folded(index):
    index.add(1, "ＡＰＩ reference")
    assert index.ids("api") == [1]
    index.add(2, "the API docs")
    assert set(index.ids("ＡＰＩ")) == {1, 2}


CJK_DOCS = {
    1: "数据库的索引很重要。",
    2: "检索数据",
    3: "検索の使い方を学ぶ",
    4: "데이터를 저장합니다",
    5: "english only, data base",
    6: "数 alone",
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("数", {1, 2, 6}),
        ("数据", {1, 2}),
        ("据库", {1}),
        ("数据库", {1}),
        ("库的索引", {1}),
        ("索", {1, 2, 3}),
        ("検索", {3}),
        ("検", {3}),
        ("使い方", {3}),
        ("の使い方", {3}),
        ("데이터", {4}),
        ("이터를", {4}),
        ("저장합니다", {4}),
        ("据数", set()),
        ("重要。", {1}),
        ("要", {1}),  # the last character of a run
        ("를", {4}),
    ],
)
def test_cjk_substrings_find_exactly_the_rows_containing_them(index, query, expected):
    for i, text in CJK_DOCS.items():
        index.add(i, text)
    assert set(index.ids(query)) == expected
    # The ground truth, restated: substring containment.
    assert expected == {i for i, t in CJK_DOCS.items() if query.rstrip("。") in t}


def test_cjk_in_title_and_heading_and_mixed_with_latin(index):
    index.add(1, "body text", title="数据手册", heading=["使用 検索"])
    index.add(2, "Python数据分析")
    assert index.ids("手册") == [1]
    assert index.ids("検索") == [1]
    assert index.ids("Python数据") == [2]
    assert set(index.ids("数据")) == {1, 2}


def test_quoted_phrase_is_a_phrase(index):
    index.add(1, "an exact phrase here")
    index.add(2, "phrase exact, reversed")
    assert index.ids('"exact phrase"') == [1]
    assert set(index.ids("exact phrase")) == {1, 2}
    assert index.ids('"exact phrase" missing') == [1]


def test_trailing_star_is_a_prefix(index):
    index.add(1, "kubectl rollout status")
    index.add(2, "kubernetes cluster")
    index.add(3, "cube root")
    assert set(index.ids("kube*")) == {1, 2}
    assert index.ids("kube") == []
    assert index.ids("rollout stat*") == [1]


def test_identifiers_are_phrases_of_their_parts(index):
    index.add(1, "failed with ERR_4711 at boot")
    index.add(2, "failed with ERR_4712 at boot")
    index.add(3, "4711 err")
    assert index.ids("ERR_4711") == [1]
    assert index.ids("how to fix err-4711") == [1]
    assert set(index.ids("4711")) == {1, 3}


def test_or_by_default(index):
    index.add(1, "alpha beta")
    index.add(2, "alpha")
    assert set(index.ids("alpha beta")) == {1, 2}
    assert index.ids("alpha beta")[0] == 1  # matching both ranks first


def test_title_match_ranks_first(index):
    index.add(1, "notes about many other things and a rollout " * 3)
    index.add(2, "unrelated body about gardening", title="Rollout checklist")
    index.add(3, "the rollout went fine, rollout again later")
    assert index.ids("rollout")[0] == 2
    scores = [s for _, s in lexical.search(index.conn, "rollout", 10)]
    assert scores == sorted(scores, reverse=True)


def test_heading_weighs_more_than_body(index):
    index.add(1, "a kettle in the body, among other words here")
    index.add(2, "among other words here, nothing else", heading=["Kettle"])
    assert index.ids("kettle") == [2, 1]


def test_restriction_to_files_and_chunks(index):
    index.add(1, "shared word", file_id=10)
    index.add(2, "shared word", file_id=20)
    index.add(3, "shared word", file_id=30)
    assert set(index.ids("shared", file_ids=[10, 30])) == {1, 3}
    assert index.ids("shared", chunk_ids=[2]) == [2]
    assert index.ids("shared", file_ids=[10], chunk_ids=[2]) == []
    assert index.ids("shared", file_ids=[]) == []
    assert len(lexical.search(index.conn, "shared", 2)) == 2


def test_very_long_queries_do_not_overflow_the_parser(index):
    index.add(1, "w5 w999")
    query = " ".join(f"w{i}" for i in range(2000))
    assert lexical.expression(index.conn, query).count(" OR ") == lexical.MAX_PHRASES - 1
    assert index.ids(query) == [1]
    assert index.ids("(" * 500 + "w5" + ")" * 500) == [1]


_NASTY = st.lists(
    st.one_of(
        st.sampled_from(list("\"*^:+-(){}[],.;!?'\\/|&%$#@~`<>=_ \t\n\u3000、。・")),
        st.sampled_from(["AND", "OR", "NOT", "NEAR", " NEAR/2 ", "col:", "数", "据", "の", "데"]),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_NASTY)
def test_fuzzed_input_never_raises(query):
    conn = _connect(":memory:")
    index = Index(conn)
    index.add(1, "数据 and the NEAR col: text 😀 C++", title="标题", heading=["見出し"])
    expression = lexical.expression(conn, query)
    if expression is not None:
        conn.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (expression,))
    lexical.search(conn, query, 10)
    conn.close()


CJK_ALPHABET = "数据库索引检検索のを使い方데이터를 ,。"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_cjk_substrings_are_found(data):
    docs = {
        i: data.draw(st.text(alphabet=CJK_ALPHABET, min_size=1, max_size=12)) for i in range(1, 5)
    }
    conn = _connect(":memory:")
    index = Index(conn)
    for i, text in docs.items():
        index.add(i, text)
    source = data.draw(st.sampled_from(sorted(docs)))
    runs = lexical._CJK_RUN.findall(docs[source])
    if runs:
        run = data.draw(st.sampled_from(runs))
        start = data.draw(st.integers(0, len(run) - 1))
        query = run[start : start + data.draw(st.integers(1, 4))]
        assert set(index.ids(query)) == {i for i, t in docs.items() if query in t}
    conn.close()


def test_words_in_most_chunks_are_left_out_of_big_indexes(index):
    n = lexical.COMMON_MIN_CHUNKS
    for i in range(1, n + 1):
        index.add(i, f"common words everywhere filler{i % 7}")
    index.add(n + 1, "common words and one rare needle")
    # "common" and "words" are in every chunk: only "needle" decides which rows match.
    assert index.ids("common needle") == [n + 1]
    # Every word common: the rarest one is kept, so the query still finds something.
    assert len(index.ids("common words filler3")) == len(index.ids("filler3")) > 0
    # Phrases are never dropped.
    assert len(index.ids('"common words" needle')) > 1
