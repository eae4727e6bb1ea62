"""The lexical side of search: what goes into the FTS5 table and how a user query becomes a
safe FTS5 MATCH expression ranked by bm25.

Tokenization (measured in docs/lexical.md): FTS5's unicode61 tokenizer with case and
diacritics folded, after NFKC (so full-width `ＡＰＩ` is `API`) and with Arabic and Hebrew vowel
marks dropped (texts are written with and without them). Combining marks count as letters, so
Devanagari or Thai words are not cut at their vowel signs. unicode61 keeps a whole run of
Chinese, Japanese, Korean or Thai (Lao, Khmer, Myanmar) characters as one token, so such runs
are rewritten before indexing into overlapping character bigrams plus the run's last character:
`数据库` -> `数据 据库 库`. Every character then starts exactly one token, so a query of one
CJK character is a prefix query (`"数"*`) and a query of n >= 2 characters is the phrase of its
n-1 bigrams (`"数据 据库"`), which matches exactly the texts that contain it.

The table is contentless (`content=''`): the indexed text is the rewritten one, so it cannot
be an external-content table over `chunks`, and the chunk text is already stored there once.
With SQLite >= 3.43 `contentless_delete=1` lets rows be deleted by rowid; older SQLite gets
a table that stores its own copy of the rewritten text, which costs space but deletes the
same way."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence

from .textsafe import clean

TABLE = "chunks_fts"
TOKENIZE = "unicode61 remove_diacritics 2 categories 'L* N* Co M*'"
# What index_fields writes; stored texts indexed under another version need rebuild().
VERSION = 1
INSERT_SQL = f"INSERT INTO {TABLE}(rowid, title, heading, body) VALUES (?, ?, ?, ?)"
# Run before deleting a file's chunks (the rowids come from them).
DELETE_FILE_SQL = f"DELETE FROM {TABLE} WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?)"
# bm25 column weights (title, heading path, body): a query word in the title counts most.
WEIGHTS = (3.0, 2.0, 1.0)
# Phrases kept from one query: FTS5 refuses expression trees deeper than 256, and past a few
# dozen words extra terms add time, not recall.
MAX_PHRASES = 64
# Lone query words in more than this share of the chunks are left out of the query, in
# indexes big enough for it to matter.
COMMON_SHARE = 0.2
COMMON_MIN_CHUNKS = 2000

# Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar) or
# with particles glued to words (Hangul). Their punctuation (U+30A0, U+30FB, U+0E4F, ...) is
# left out: unicode61 splits on it.
_CJK = (
    "\u0e01-\u0e3a\u0e40-\u0e4e\u0e81-\u0edf\u1000-\u1049\u1050-\u109f\u1780-\u17d3"
    "\u1100-\u11ff\u3005\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u3130-\u318f"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_CJK_SPLIT = re.compile(f"([{_CJK}]+)")
# Hebrew points and cantillation, Arabic harakat and the superscript alef.
_VOWEL_MARKS = re.compile("[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u064b-\u065f\u0670]")
# A query term: a "quoted phrase" or a run of anything but spaces and quotes (an unmatched
# quote is dropped).
_TERM = re.compile(r'"([^"]*)"|[^\s"]+')


def fts_schema(sqlite_version: str) -> str:
    """The CREATE VIRTUAL TABLE statement for `chunks_fts` (rowid = chunks.id)."""
    parts = tuple(int(p) for p in sqlite_version.split(".")[:2])
    storage = ", content='', contentless_delete=1" if parts >= (3, 43) else ""
    return (
        f"CREATE VIRTUAL TABLE {TABLE} USING fts5(title, heading, body,"
        f' tokenize="{TOKENIZE}"{storage})'
    )


def _bigrams(match: re.Match) -> str:
    run = match.group()
    grams = [run[i : i + 2] for i in range(len(run) - 1)]
    return " " + " ".join([*grams, run[-1]]) + " "


def _normalize(text: str) -> str:
    return _VOWEL_MARKS.sub("", unicodedata.normalize("NFKC", text))


def fold(text: str) -> str:
    """Text as the index sees it: normalized, CJK runs rewritten into bigrams."""
    return _CJK_RUN.sub(_bigrams, _normalize(text))


def index_fields(title: str, heading: Sequence[str], text: str) -> tuple[str, str, str]:
    """The (title, heading, body) values to insert into chunks_fts for one chunk."""
    return fold(title), fold(" / ".join(heading)), fold(text)


def rebuild(conn) -> int:
    """Fill chunks_fts afresh from the stored chunks and file titles (for the migration that
    adds it, or after a VERSION change, or a repair): no model, nothing re-embedded. Returns
    the rows."""
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (TABLE,)).fetchone()[0]
    if "content=''" in sql:  # a DELETE of every row leaves bm25's totals wrong in these
        conn.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('delete-all')")
    else:
        conn.execute(f"DELETE FROM {TABLE}")
    rows = conn.execute(
        "SELECT c.id, f.title, c.heading, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
    ).fetchall()
    conn.executemany(
        INSERT_SQL, [(i, *index_fields(title, json.loads(h), text)) for i, title, h, text in rows]
    )
    return len(rows)


def _is_word_char(ch: str) -> bool:
    # The tokenizer's token characters (TOKENIZE's categories).
    category = unicodedata.category(ch)
    return category[0] in "LNM" or category == "Co"


def _phrase_tokens(text: str) -> tuple[list[str], bool]:
    """The tokens of one query term and whether its last one must be a prefix: a lone CJK
    character at the end (its bigrams start with it). CJK runs become their bigrams only, so
    the phrase matches inside longer runs."""
    tokens: list[str] = []
    word: list[str] = []
    last_is_lone_cjk = False
    for piece in _CJK_SPLIT.split(_normalize(text)):
        if not piece:
            continue
        if _CJK_RUN.fullmatch(piece):
            tokens.extend(piece[i : i + 2] for i in range(max(len(piece) - 1, 1)))
            last_is_lone_cjk = len(piece) == 1
            continue
        for ch in piece + " ":
            if _is_word_char(ch):
                word.append(ch)
            elif word:
                tokens.append("".join(word))
                word = []
                last_is_lone_cjk = False
    return tokens, last_is_lone_cjk


def _phrase(tokens: list[str], prefix: bool) -> str:
    # Tokens hold no quotes (only word characters), so no escaping is needed.
    return '"' + " ".join(tokens) + '"' + ("*" if prefix else "")


def _phrases(user_query: str) -> list[tuple[str, bool]]:
    """(phrase, is a lone word) for each distinct term of a user query, in order."""
    user_query = clean(user_query)  # a lone surrogate is no word, and SQLite refuses it
    phrases: list[tuple[str, bool]] = []
    for m in _TERM.finditer(user_query):
        quoted = m.group(1)
        raw = quoted if quoted is not None else m.group()
        tokens, lone_cjk = _phrase_tokens(raw)
        if not tokens:
            continue
        prefix = lone_cjk or (quoted is None and raw.endswith("*"))
        phrase = _phrase(tokens, prefix)
        if phrase not in (p for p, _ in phrases):
            phrases.append((phrase, len(tokens) == 1 and not prefix))
    return phrases[:MAX_PHRASES]


def match_query(user_query: str, operator: str = "OR") -> str | None:
    """A safe FTS5 MATCH expression for any user input, or None when it holds no word.

    Each term is quoted, so FTS5 syntax in the input (`AND`, `NEAR`, `-`, `:`, `^`, `*`, `+`)
    is searched as words: "exact phrase" stays a phrase, a trailing `*` makes the last word a
    prefix, and the terms are joined by `operator` (OR: see docs/lexical.md)."""
    if operator not in ("OR", "AND"):
        raise ValueError(f"operator must be OR or AND, not {operator!r}")
    phrases = [p for p, _ in _phrases(user_query)]
    return f" {operator} ".join(phrases) if phrases else None


def _without_common(conn, phrases: list[tuple[str, bool]]) -> list[str]:
    """The phrases minus lone words found in more than COMMON_SHARE of the chunks (the
    rarest one when every word is common): such a word adds almost nothing to bm25 but makes
    an OR query score nearly every row (measured in docs/lexical.md)."""
    words = [p.strip('"') for p, lone in phrases if lone]
    if len(phrases) < 2 or not words:
        return [p for p, _ in phrases]
    # An upper bound of the chunk count that costs nothing (ids only grow).
    total = conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0] or 0
    if total < COMMON_MIN_CHUNKS:
        return [p for p, _ in phrases]
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{TABLE}_vocab USING fts5vocab(main, {TABLE}, row)"
    )
    df = dict(
        conn.execute(
            f"SELECT term, doc FROM temp.{TABLE}_vocab"
            " WHERE term IN (SELECT value FROM json_each(?))",
            (json.dumps(words),),
        )
    )
    common = {w for w in words if df.get(w, 0) > COMMON_SHARE * total}
    kept = [p for p, lone in phrases if not (lone and p.strip('"') in common)]
    return kept or [min(phrases, key=lambda p: df.get(p[0].strip('"'), 0))[0]]


def bm25_sql(file_filter: bool = False, chunk_filter: bool = False) -> str:
    """SELECT (chunk id, score) best first; score = -bm25, higher is better.

    Parameters in order: the MATCH expression, then a JSON list of file ids if file_filter,
    then a JSON list of chunk ids if chunk_filter, then k."""
    weights = ", ".join(str(w) for w in WEIGHTS)
    where = [f"{TABLE} MATCH ?"]
    if file_filter:
        where.append(
            "rowid IN (SELECT id FROM chunks WHERE file_id IN (SELECT value FROM json_each(?)))"
        )
    if chunk_filter:
        where.append("rowid IN (SELECT value FROM json_each(?))")
    return (
        f"SELECT rowid, -bm25({TABLE}, {weights}) AS score FROM {TABLE}"
        f" WHERE {' AND '.join(where)} ORDER BY score DESC LIMIT ?"
    )


def search(
    conn,
    user_query: str,
    k: int,
    file_ids: Sequence[int] | None = None,
    chunk_ids: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """Top k (chunk id, score) for a user query; [] when it holds no word."""
    phrases = _without_common(conn, _phrases(user_query))
    if not phrases:
        return []
    expression = " OR ".join(phrases)
    params: list[object] = [expression]
    if file_ids is not None:
        params.append(json.dumps(list(file_ids)))
    if chunk_ids is not None:
        params.append(json.dumps(list(chunk_ids)))
    params.append(k)
    sql = bm25_sql(file_ids is not None, chunk_ids is not None)
    return [(int(r), float(s)) for r, s in conn.execute(sql, params)]
