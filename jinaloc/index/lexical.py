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
n-1 bigrams (`"数据 据库"`), which matches exactly the texts that contain it. A longer CJK
query term (more than SHORT_RUN characters: a question, a sentence) is split instead into its
bigrams OR-ed, so a chunk sharing most of them ranks first (docs/quality.md).

Words are also stemmed (Snowball, by the chunk's language guessed from its common words,
English when unsure) into a fourth column `stems` that holds only the stems that differ from
their word: a query word matches its exact form in any column and, as a second OR-ed phrase,
its stem, so `headaches` finds `headache` while an exact match scores more.

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
from functools import cache

import Stemmer

from ..textsafe import clean

TABLE = "chunks_fts"
# One row per file (rowid = files.id): its title and whole text, so a file is ranked by bm25
# over all its words, not by its best chunk's (docs/quality.md).
FILES_TABLE = "files_fts"
TOKENIZE = "unicode61 remove_diacritics 2 categories 'L* N* Co M*'"
# What index_fields writes; stored texts indexed under another version need rebuild().
VERSION = 2
INSERT_SQL = f"INSERT INTO {TABLE}(rowid, title, heading, body, stems) VALUES (?, ?, ?, ?, ?)"
FILE_INSERT_SQL = f"INSERT INTO {FILES_TABLE}(rowid, title, body, stems) VALUES (?, ?, ?, ?)"
# Run before deleting a file's chunks (the rowids come from them).
DELETE_FILE_SQL = f"DELETE FROM {TABLE} WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?)"
FILE_DELETE_SQL = f"DELETE FROM {FILES_TABLE} WHERE rowid = ?"
# bm25 column weights (title, heading path, body, stems): a query word in the title counts
# most; a stem is a body-like match (docs/quality.md).
WEIGHTS = (3.0, 2.0, 1.0, 1.0)
FILE_WEIGHTS = (3.0, 1.0, 1.0)  # files_fts: title, body, stems
# A query term of at most this many Han, kana or Hangul characters is matched exactly (a
# word, a name); a longer one is a question or a sentence, searched as its OR-ed bigrams.
SHORT_RUN = 4
# Below this -bm25 every matched word is in more than half the chunks (FTS5 then floors its
# idf at 1e-6): in an index of at least NOISE_MIN_CHUNKS chunks such rows are no lexical
# hits, as their order says nothing (docs/lexical.md). A smaller index keeps them.
MIN_SCORE = 1e-4
NOISE_MIN_CHUNKS = 10
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
# Han, kana and Hangul: a character is about a syllable, so a query term of more than
# SHORT_RUN of them is a question or a sentence. (A Thai, Lao, Khmer or Myanmar word alone
# runs longer than that, so their runs are always matched exactly.)
_SYLLABIC = re.compile(
    "[\u1100-\u11ff\u3005\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff"
    "\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af"
    "\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]"
)
_CJK_SPLIT = re.compile(f"([{_CJK}]+)")
# Hebrew points and cantillation, Arabic harakat and the superscript alef.
_VOWEL_MARKS = re.compile("[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u064b-\u065f\u0670]")
# A query term: a "quoted phrase" or a run of anything but spaces and quotes (an unmatched
# quote is dropped).
_TERM = re.compile(r'"([^"]*)"|[^\s"]+')


def _storage(sqlite_version: str) -> str:
    parts = tuple(int(p) for p in sqlite_version.split(".")[:2])
    return ", content='', contentless_delete=1" if parts >= (3, 43) else ""


def fts_schema(sqlite_version: str) -> str:
    """The CREATE VIRTUAL TABLE statement for `chunks_fts` (rowid = chunks.id)."""
    return (
        f"CREATE VIRTUAL TABLE {TABLE} USING fts5(title, heading, body, stems,"
        f' tokenize="{TOKENIZE}"{_storage(sqlite_version)})'
    )


def files_schema(sqlite_version: str) -> str:
    """The CREATE VIRTUAL TABLE statement for `files_fts` (rowid = files.id)."""
    return (
        f"CREATE VIRTUAL TABLE {FILES_TABLE} USING fts5(title, body, stems,"
        f' tokenize="{TOKENIZE}"{_storage(sqlite_version)})'
    )


def _bigrams(match: re.Match) -> str:
    run = match.group()
    grams = [run[i : i + 2] for i in range(len(run) - 1)]
    return " " + " ".join([*grams, run[-1]]) + " "


# A name ending in `+`, `++` or `#` (C++, C#, F#, g++): the tokenizer drops the symbols, so
# such a name also gets a token of its own (`cplusplus`, `csharp`) and ranks its notes above
# ones that only hold the bare letter.
_SYMBOL_NAME = re.compile(r"(?<![\w+#])([^\W\d_]\w{0,9})(\+\+|\+|#)(?![\w+#])")
_SYMBOL_WORDS = {"++": "plusplus", "+": "plus", "#": "sharp"}


def _symbol_name(match: re.Match) -> str:
    return f"{match.group()} {match.group(1)}{_SYMBOL_WORDS[match.group(2)]}"


def _normalize(text: str) -> str:
    text = _VOWEL_MARKS.sub("", unicodedata.normalize("NFKC", text))
    return _SYMBOL_NAME.sub(_symbol_name, text) if "+" in text or "#" in text else text


def fold(text: str) -> str:
    """Text as the index sees it: normalized, CJK runs rewritten into bigrams."""
    return _CJK_RUN.sub(_bigrams, _normalize(text))


# Snowball stemmers (PyStemmer) for languages told apart by their commonest words; a text
# with none of them is stemmed as English.
_COMMON_WORDS = {
    "english": "the and of to is in that it for with as are was this be on not or",
    "german": "der die das und ist nicht ein eine mit den von zu sich auf für auch",
    "french": "le la les et est une des du que pour dans pas qui sur au avec",
    "spanish": "el la los las y es una del que por para con no se en su",
    "italian": "il la gli le e è una del che per non con di della sono",
    "portuguese": "o a os as e é uma do da que para com não em se",
    "dutch": "de het een en is van niet dat met voor op zijn ook te",
    "swedish": "och är att det en som på med för inte av till den har",
    "russian": "и в не на что это с как по к но из у за",
}
_LANGUAGE_OF = {}
for _language, _words in _COMMON_WORDS.items():
    for _word in _words.split():
        _LANGUAGE_OF.setdefault(_word, _language)
# Words a stemmer may change: letters only (no digits, no CJK), at least 3 of them.
_WORD = re.compile(r"[^\W\d_]{3,}")
_ANY_WORD = re.compile(r"[^\W\d_]+")


def _clear(conn, table: str) -> None:
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
    if "content=''" in sql:  # a DELETE of every row leaves bm25's totals wrong in these
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('delete-all')")
    else:
        conn.execute(f"DELETE FROM {table}")


@cache
def _stemmer(language: str):
    return Stemmer.Stemmer(language)


def language(text: str) -> str:
    """The Snowball language whose common words `text` uses most (English when none)."""
    counts: dict[str, int] = {}
    for word in _ANY_WORD.findall(text.lower()):
        found = _LANGUAGE_OF.get(word)
        if found:
            counts[found] = counts.get(found, 0) + 1
    return max(counts, key=lambda lang: (counts[lang], lang == "english")) if counts else "english"


def stems(text: str) -> str:
    """The stems of `text`'s words that differ from the word, in the text's language."""
    words = _WORD.findall(_CJK_RUN.sub(" ", _normalize(text)).lower())
    if not words:
        return ""
    stemmed = _stemmer(language(" ".join(words))).stemWords(words)
    return " ".join(s for w, s in zip(words, stemmed, strict=True) if s != w)


def index_fields(title: str, heading: Sequence[str], text: str) -> tuple[str, str, str, str]:
    """The (title, heading, body, stems) values to insert into chunks_fts for one chunk."""
    path = " / ".join(heading)
    return fold(title), fold(path), fold(text), stems(f"{title}\n{path}\n{text}")


def file_fields(title: str, texts: Sequence[str]) -> tuple[str, str, str]:
    """The (title, body, stems) values to insert into files_fts for a file's chunk texts."""
    body = "\n".join(texts)
    return fold(title), fold(body), stems(f"{title}\n{body}")


def rebuild(conn, files: bool = True) -> int:
    """Fill chunks_fts (and files_fts unless not `files`) afresh from the stored chunks and
    file titles (for the migration that adds them, or after a VERSION change): no model,
    nothing re-embedded, or a repair. Returns the chunk rows."""
    _clear(conn, TABLE)
    rows = conn.execute(
        "SELECT c.id, f.title, c.heading, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
    ).fetchall()
    conn.executemany(
        INSERT_SQL, [(i, *index_fields(title, json.loads(h), text)) for i, title, h, text in rows]
    )
    if files:
        _clear(conn, FILES_TABLE)
        texts = conn.execute(
            "SELECT f.id, f.title, json_group_array(c.text) FROM files f"
            " JOIN (SELECT file_id, text FROM chunks ORDER BY file_id, seq) c ON c.file_id = f.id"
            " GROUP BY f.id"
        ).fetchall()
        conn.executemany(
            FILE_INSERT_SQL, [(i, *file_fields(t, json.loads(c))) for i, t, c in texts]
        )
    return len(rows)


def recreate(conn) -> int:
    """Drop the FTS tables and build them again with this version's columns (a migration)."""
    version = conn.execute("SELECT sqlite_version()").fetchone()[0]
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"DROP TABLE IF EXISTS {FILES_TABLE}")
    conn.execute(fts_schema(version))
    conn.execute(files_schema(version))
    return rebuild(conn)


def _is_word_char(ch: str) -> bool:
    # The tokenizer's token characters (TOKENIZE's categories).
    category = unicodedata.category(ch)
    return category[0] in "LNM" or category == "Co"


def _pieces(text: str) -> list[tuple[bool, list[str]]]:
    """A query term as (is a CJK run, its tokens) pieces in order: a CJK run's tokens are its
    characters' bigrams (its one character when alone), other text's its words."""
    pieces: list[tuple[bool, list[str]]] = []
    for piece in _CJK_SPLIT.split(_normalize(text)):
        if not piece:
            continue
        if _CJK_RUN.fullmatch(piece):
            pieces.append((True, [piece[i : i + 2] for i in range(max(len(piece) - 1, 1))]))
            continue
        words, word = [], []
        for ch in piece + " ":
            if _is_word_char(ch):
                word.append(ch)
            elif word:
                words.append("".join(word))
                word = []
        if words:
            pieces.append((False, words))
    return pieces


def _exact_tokens(pieces: list[tuple[bool, list[str]]]) -> tuple[list[str], bool]:
    """The phrase that matches a term where the text holds it, and whether its last token
    must be a prefix: a lone CJK character at the end (its bigrams start with it). A run
    followed by more of the term ends there in the text too, where the index wrote the
    run's last character as a token of its own: the phrase holds it as well."""
    tokens: list[str] = []
    for n, (cjk, grams) in enumerate(pieces):
        tokens.extend(grams)
        if cjk and len(grams[-1]) == 2 and n + 1 < len(pieces):
            tokens.append(grams[-1][1])
    cjk, grams = pieces[-1]
    return tokens, cjk and len(grams[-1]) == 1


def _phrase(tokens: list[str], prefix: bool) -> str:
    # Tokens hold no quotes (only word characters), so no escaping is needed.
    return '"' + " ".join(tokens) + '"' + ("*" if prefix else "")


def _phrases(user_query: str) -> list[tuple[str, bool]]:
    """(phrase, is a lone unquoted word) for each distinct term of a user query, in order. An
    unquoted term of more than SHORT_RUN Han, kana or Hangul characters gives each of its
    bigrams (and its other words) as a phrase of its own."""
    user_query = clean(user_query)  # a lone surrogate is no word, and SQLite refuses it
    phrases: list[tuple[str, bool]] = []

    def add(phrase: str, lone: bool) -> None:
        if phrase not in (p for p, _ in phrases):
            phrases.append((phrase, lone))

    for m in _TERM.finditer(user_query):
        quoted = m.group(1)
        raw = quoted if quoted is not None else m.group()
        pieces = _pieces(raw)
        if not pieces:
            continue
        if quoted is None and len(_SYLLABIC.findall(_normalize(raw))) > SHORT_RUN:
            for cjk, grams in pieces:
                if not cjk:
                    add(_phrase(grams, False), len(grams) == 1)
                elif len(grams[0]) == 1:
                    add(_phrase(grams, True), False)
                else:
                    for gram in grams:
                        add(_phrase([gram], False), True)
            continue
        tokens, prefix = _exact_tokens(pieces)
        prefix = prefix or (quoted is None and raw.endswith("*"))
        add(_phrase(tokens, prefix), quoted is None and len(tokens) == 1 and not prefix)
    return phrases[:MAX_PHRASES]


def _stemmed(phrases: list[tuple[str, bool]]) -> list[str]:
    """The phrases with each lone word whose stem differs replaced by that stem (by English
    and by the query's own language when it is another): the stems column holds such stems
    for every form of the word, the exact columns the forms that stem to themselves, so the
    stem matches every form, as a Porter-stemmed index would. Phrases of several words
    (identifiers, `"quoted text"`) and quoted words stay exact."""
    words = [p.strip('"').lower() for p, lone in phrases if lone]
    languages = dict.fromkeys(("english", language(" ".join(words))))
    stems = {
        word: list(dict.fromkeys(_stemmer(lang).stemWord(word) for lang in languages))
        for word in words
        if _WORD.fullmatch(word)
    }
    out: list[str] = []
    for phrase, lone in phrases:
        forms = stems.get(phrase.strip('"').lower()) if lone else None
        for p in [_phrase([f], False) for f in forms] if forms else [phrase]:
            if p not in out:
                out.append(p)
    return out[:MAX_PHRASES]


def _without_common(conn, phrases: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The phrases minus lone words found in more than COMMON_SHARE of the chunks (the
    rarest one when every word is common): such a word adds almost nothing to bm25 but makes
    an OR query score nearly every row (measured in docs/lexical.md)."""
    words = [p.strip('"') for p, lone in phrases if lone]
    if len(phrases) < 2 or not words:
        return phrases
    # An upper bound of the chunk count that costs nothing (ids only grow).
    total = conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0] or 0
    if total < COMMON_MIN_CHUNKS:
        return phrases
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
    kept = [(p, lone) for p, lone in phrases if not (lone and p.strip('"') in common)]
    return kept or [min(phrases, key=lambda p: df.get(p[0].strip('"'), 0))]


def expression(conn, user_query: str) -> str | None:
    """The MATCH expression `search` runs: the query's phrases without its common words,
    lone words stemmed, OR-ed; None when the query holds no word."""
    phrases = _without_common(conn, _phrases(user_query))
    return " OR ".join(_stemmed(phrases)) if phrases else None


def bm25_sql(file_filter: bool = False, chunk_filter: bool = False, files: bool = False) -> str:
    """SELECT (chunk id, score) best first, or (file id, score) from files_fts if `files`;
    score = -bm25, higher is better.

    Parameters in order: the MATCH expression, then a JSON list of file ids if file_filter,
    then a JSON list of chunk ids if chunk_filter (not with `files`), then k."""
    table = FILES_TABLE if files else TABLE
    weights = ", ".join(str(w) for w in (FILE_WEIGHTS if files else WEIGHTS))
    where = [f"{table} MATCH ?"]
    if file_filter:
        ids = "SELECT value FROM json_each(?)"
        where.append(
            f"rowid IN ({ids})"
            if files
            else f"rowid IN (SELECT id FROM chunks WHERE file_id IN ({ids}))"
        )
    if chunk_filter:
        where.append("rowid IN (SELECT value FROM json_each(?))")
    return (
        f"SELECT rowid, -bm25({table}, {weights}) AS score FROM {table}"
        f" WHERE {' AND '.join(where)} ORDER BY score DESC LIMIT ?"
    )


def search(
    conn,
    user_query: str,
    k: int,
    file_ids: Sequence[int] | None = None,
    chunk_ids: Sequence[int] | None = None,
    files: bool = False,
) -> list[tuple[int, float]]:
    """Top k (chunk id, score), or (file id, score) if `files`, for a user query; [] when it
    holds no word, or when each word it matches is in more than half the chunks of an index
    of NOISE_MIN_CHUNKS or more."""
    match = expression(conn, user_query)
    if match is None:
        return []
    params: list[object] = [match]
    if file_ids is not None:
        params.append(json.dumps(list(file_ids)))
    if chunk_ids is not None:
        params.append(json.dumps(list(chunk_ids)))
    params.append(k)
    sql = bm25_sql(file_ids is not None, chunk_ids is not None, files)
    rows = [(int(r), float(s)) for r, s in conn.execute(sql, params)]
    if rows and rows[0][1] < MIN_SCORE and _noise_counts(conn):
        return []
    return rows


def _noise_counts(conn) -> bool:
    # An upper bound of the chunk count that costs nothing (ids only grow).
    total = conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0] or 0
    return total >= NOISE_MIN_CHUNKS


def too_common(conn, user_query: str) -> bool:
    """Whether `search` found nothing for this query because each word it matches is in more
    than half the chunks (so the CLI can say why, not just "no results")."""
    match = expression(conn, user_query)
    if match is None or not _noise_counts(conn):
        return False
    row = conn.execute(bm25_sql(), (match, 1)).fetchone()
    return row is not None and row[1] < MIN_SCORE
