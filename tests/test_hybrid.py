"""Hybrid, semantic and lexical search end to end on the tiny nano GGUF: rare terms and short
CJK words found, input that never breaks the query, --explain, options in every mode."""

from __future__ import annotations

import json

import pytest
from conftest import model_dir
from index_helpers import have_gguf, make_notes
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.index.store import Store

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
MODES = ("hybrid", "semantic", "lexical")


def cli(*args, ok=(0,)):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code in ok, (r.exit_code, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hybrid")
    notes = tmp / "notes"
    make_notes(notes, 40, paragraphs=3, words=40)
    (notes / "errors.md").write_text("# Outage\n\nThe proxy failed with ERR_CONN_4711 twice.\n")
    (notes / "zh.md").write_text("# 笔记\n\n今天整理了数据库的备份方案。\n", encoding="utf-8")
    (notes / "ja.md").write_text("# メモ\n\n全文検索の設定を見直した。\n", encoding="utf-8")
    (notes / "cpp.md").write_text("# Languages\n\nTemplates in C++ and the -flag option.\n")
    path = tmp / "index.db"
    cli("index", notes, "--db", path, "-q", "--chunk-tokens", "96", *MODEL)
    return path


def search(db, query, *args, ok=(0,)):
    r = cli("search", "--db", db, "--json", *args, *MODEL, "--", query, ok=ok)
    return json.loads(r.stdout) if r.exit_code == 0 else []


@pytest.mark.parametrize(
    "query, name",
    [
        ("ERR_CONN_4711", "errors.md"),
        ("数据", "zh.md"),
        ("検索", "ja.md"),
        ("err_conn_4711", "errors.md"),
    ],
)
def test_rare_terms_and_two_character_cjk_words_are_found(db, query, name):
    for mode in ("hybrid", "lexical"):
        rows = search(db, query, "--mode", mode)
        assert rows[0]["path"].endswith(name), (mode, [r["path"] for r in rows])
        assert rows[0]["lexical"]["rank"] == 1
    # Lexical mode finds only the notes holding the term.
    assert len(search(db, query, "--mode", "lexical")) == 1


def test_scores_say_what_they_are(db):
    hybrid = search(db, "proxy ERR_CONN_4711", "-k", "5")
    top = hybrid[0]
    assert top["mode"] == "hybrid" and top["semantic"]["score"] <= 1
    assert top["score"] == pytest.approx(
        1 / (60 + top["lexical"]["rank"]) + 1 / (60 + top["semantic"]["rank"]), abs=1e-5
    )
    semantic = search(db, "proxy ERR_CONN_4711", "-k", "5", "--mode", "semantic")
    assert all(r["lexical"] is None and r["score"] == r["semantic"]["score"] for r in semantic)
    # The semantic part of a hybrid hit is the same cosine the semantic mode gives.
    every = search(db, "proxy ERR_CONN_4711", "--mode", "semantic", "-k", "500", "--all-chunks")
    cos = {(r["path"], r["start_line"]): r["score"] for r in every}
    for r in hybrid:
        assert r["semantic"]["score"] == pytest.approx(cos[r["path"], r["start_line"]], abs=1e-5)


def test_explain_shows_both_lists(db):
    rows = search(db, "ERR_CONN_4711", "--explain", "-k", "3")
    e = rows[0]["explain"]
    assert e["lexical"]["rank"] == 1 and e["fusion"] == {
        "method": "rrf",
        "k": 60,
        "weights": {"semantic": 1.0, "lexical": 1.0},
    }
    assert e["lexical"]["fused"] + (e["semantic"]["fused"] if e["semantic"] else 0) == (
        pytest.approx(e["score"], abs=1e-5)
    )
    text = cli("search", "ERR_CONN_4711", "--db", db, "--explain", "-k", "1", *MODEL).stdout
    assert "lexical #1" in text and "semantic" in text and "→ hybrid" in text


@pytest.mark.parametrize(
    "query",
    [
        "C++",
        '"unbalanced',
        "-flag",
        "foo:bar",
        "NEAR",
        "*",
        "AND OR NOT",
        "🙂",
        "a^b",
        "x*",
        '"Templates in"',
        "(",
        "col:val*",
        "'",
    ],
)
def test_any_input_is_searched_as_words(db, query):
    for mode in MODES:
        # `--` as a shell user would type it before `-flag`.
        cli("search", "--db", db, "--mode", mode, "--json", *MODEL, "--", query, ok=(0, 1))


def test_phrases_and_prefixes(db):
    assert search(db, '"Templates in C"', "--mode", "lexical")[0]["path"].endswith("cpp.md")
    assert search(db, '"in Templates"', "--mode", "lexical", ok=(1,)) == []
    assert search(db, "Templ*", "--mode", "lexical")[0]["path"].endswith("cpp.md")
    assert search(db, "-flag", "--mode", "lexical")[0]["path"].endswith("cpp.md")


@pytest.mark.parametrize("mode", MODES)
def test_options_work_in_every_mode(db, mode):
    rows = search(db, "tomato basil garlic", "--mode", mode, "-k", "3")
    assert len(rows) == 3 and len({r["path"] for r in rows}) == 3
    chunks = search(db, "tomato basil garlic", "--mode", mode, "-k", "20", "--all-chunks")
    assert len({(r["path"], r["start_line"]) for r in chunks}) == len(chunks)
    assert len(chunks) > len({r["path"] for r in chunks})  # several chunks of one file
    only = search(db, "tomato basil garlic", "--mode", mode, "--path", "cooking/*")
    assert only and all("/cooking/" in r["path"] for r in only)
    scores = [r["semantic" if mode != "lexical" else "lexical"]["score"] for r in rows]
    floor = sorted(scores)[1]
    kept = search(db, "tomato basil garlic", "--mode", mode, "-k", "3", "--min-score", floor)
    kept_scores = [r["semantic" if mode != "lexical" else "lexical"]["score"] for r in kept]
    assert kept and all(s >= floor for s in kept_scores)
    files = cli("search", "tomato basil", "--db", db, "--mode", mode, "--files", "-k", "4", *MODEL)
    assert len(files.stdout.splitlines()) == 4
    jsonl = cli("search", "tomato basil", "--db", db, "--mode", mode, "--jsonl", "-k", "2", *MODEL)
    assert [json.loads(x)["mode"] for x in jsonl.stdout.splitlines()] == [mode] * 2


def test_lexical_rows_follow_every_write(db, tmp_path):
    copy = tmp_path / "copy.db"
    with Store.open(db, create=False) as store:
        store.conn.execute(f"VACUUM INTO '{copy}'")
    with Store.open(copy, create=False) as store:
        record = next(r for p, r in store.files_under("/").items() if p.endswith("errors.md"))
        store.remove_file(record.id)
        n = store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        assert store.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == n
    assert search(copy, "ERR_CONN_4711", "--mode", "lexical", ok=(1,)) == []


def test_bad_mode_is_a_usage_error(db):
    r = cli("search", "x", "--db", db, "--mode", "fuzzy", ok=(2,))
    assert "unknown mode 'fuzzy'" in r.stderr
