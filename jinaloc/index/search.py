"""Searching an index: a coarse Hamming stage on sign bits, then exact cosine rescoring.

The coarse stage takes the k x oversample nearest chunks by Hamming distance (a popcount
scan of the packed bits, blocks.py); their float vectors are then scored exactly.
`exact=True`, or an index of fewer than 256 dims, scores every chunk instead. Both paths
score the same float32 vectors, so they agree (to float rounding) whenever the coarse stage
kept the true top results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..chunking import embed_text
from ..errors import JinalocError
from ..notes import date_arg
from ..paths import display_path
from .options import DEFAULTS, SearchOptions, given
from .store import MAX_K, Store

if TYPE_CHECKING:  # a lexical search needs neither
    import numpy as np

# Floors for small k (k=1 would get 10), and by dim: fewer bits tie and mislead more often.
# Candidates x dim >= CANDIDATE_BITS gives 1024 candidates at 256 dims, 341 at 768; the
# popcount scan costs the same whatever it keeps, and rescoring 1024 chunks by id takes 2-3
# ms (README "Search at scale": at 1M x 256 recall@10 is 0.93 with 100 candidates, 0.99
# with 1024).
MIN_CANDIDATES = 64
CANDIDATE_BITS = 1 << 18
# Below this many bits Hamming distance ranks too coarsely to trust as the first stage
# (recall@10 at x10: 0.90 with 128 bits, 0.995 with 256); such indexes are scanned exactly,
# which their small vectors make cheap.
COARSE_MIN_DIM = 256
# Reciprocal rank fusion: a hit scores sum(weight / (RRF_K + rank)) over the lists it is in.
# See README "Hybrid search" for how the constant and the weights were chosen.
RRF_K = 60
WEIGHTS = {"semantic": 1.0, "lexical": 1.0}
# Lexical candidates brought to the fusion per wanted result (at least FUSION_MIN); the
# vector list brings what its coarse stage rescored anyway.
FUSION_DEPTH = 4
FUSION_MIN = 40


@dataclass
class Part:
    """A hit's place in one ranked list: its score there and its 1-based rank."""

    score: float
    rank: int | None  # None: scored, but not in that list's candidates

    def to_json(self) -> dict:
        return {"score": round(self.score, 6), "rank": self.rank}


@dataclass
class Hit:
    path: str  # absolute
    rel: str  # relative to its indexed root
    title: str
    start_line: int
    end_line: int
    heading: list[str]
    # cosine (semantic), -bm25 (lexical; a file's: its chunks' combined, _file_rows) or the
    # fused value (hybrid)
    score: float
    text: str
    chunk_id: int
    file_id: int
    mode: str = "semantic"
    semantic: Part | None = None  # cosine similarity and rank in the vector list
    lexical: Part | None = None  # -bm25 and rank in the lexical list
    page: int | None = None  # where the chunk starts, in a paged document (PDF)
    date: str | None = None  # the file's date: its front matter's, else its mtime's
    tags: list[str] = field(default_factory=list)
    first_stage: Part | None = None  # with a reranker: the score and rank it reordered
    rerank: Part | None = None  # the cross-encoder's relevance (0-1) and rank
    root: str = ""  # the folder it was indexed from (files.root)

    def display_path(self) -> str:
        return display_path(self.path)

    def to_json(self, explain: bool = False) -> dict:
        row = {
            "path": self.display_path(),
            "start_line": self.start_line,
            "end_line": self.end_line,
            "heading": " > ".join(self.heading),
            "title": self.title,
            "score": round(self.score, 6),
            "mode": self.mode,
            "semantic": self.semantic.to_json() if self.semantic else None,
            "lexical": self.lexical.to_json() if self.lexical else None,
            "page": self.page,
            "date": self.date,
            "tags": self.tags,
            "text": self.text,
        }
        if self.rerank is not None:
            row["rerank"] = self.rerank.to_json()
            row["first_stage"] = self.first_stage.to_json()
        if explain:
            row["explain"] = self.explain()
        return row

    def explain(self) -> dict:
        """How the score came about: each list's rank and score, and its share of the fused
        score (weight / (RRF_K + rank)) in hybrid mode."""
        out: dict = {"mode": self.mode, "score": round(self.score, 6)}
        for name in ("semantic", "lexical"):
            part = getattr(self, name)
            if part is None:
                out[name] = None
                continue
            out[name] = part.to_json()
            if self.mode == "hybrid":
                share = WEIGHTS[name] / (RRF_K + part.rank) if part.rank else 0.0
                out[name]["fused"] = round(share, 6)
        if self.mode == "hybrid":
            out["fusion"] = {"method": "rrf", "k": RRF_K, "weights": dict(WEIGHTS)}
        if self.rerank is not None:
            out["rerank"] = self.rerank.to_json()
            out["first_stage"] = self.first_stage.to_json()
        return out


def matching_files(store: Store, glob: str) -> list[int]:
    """Ids of files whose root-relative path (with or without the root's own name in
    front: `git/*` and `til/git/*` for a root `til`) or displayed path matches a
    gitignore-style glob."""
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines([glob])
    cwd = Path.cwd()
    ids = []
    for file_id, path, rel in store.file_paths():
        shown = os.path.relpath(path) if Path(path).is_relative_to(cwd) else path.lstrip("/")
        root = path[: -len(rel)] if rel and path.endswith(rel) else ""
        named = f"{Path(root).name}/{rel}" if Path(root).name else rel
        if spec.match_file(rel) or spec.match_file(named) or spec.match_file(shown):
            ids.append(file_id)
    return ids


def restrict(
    store: Store,
    path_glob: str | None = None,
    tags: Sequence[str] = (),
    since: str | None = None,
    before: str | None = None,
) -> list[int] | None:
    """Ids of the files a search may return (None: any): matching the glob, with every tag
    (a nested tag `a/b` counts as `a`), dated on or after `since` and before `before`
    (ISO dates or spans back from today: 7d, 2w, 3m, 1y). Every stage filters by these ids
    before ranking, so a filter never starves the results."""
    ids = matching_files(store, path_glob) if path_glob else None
    if tags or since or before:
        try:
            since, before = (date_arg(str(d)) if d else None for d in (since, before))
        except ValueError as e:
            raise JinalocError(str(e)) from None
        meta = store.files_matching(tags, since, before)
        ids = meta if ids is None else sorted(set(ids) & set(meta))
    return ids


Row = tuple[int, int, float]  # (chunk id, file id, score)


def search_vector(
    store: Store,
    query: np.ndarray,
    k: int = 10,
    options: SearchOptions = DEFAULTS,
    exclude_files: Sequence[int] = (),
    **fields,
) -> list[Hit]:
    """The k best chunks (`all_chunks`) or files (best chunk each) for a query vector,
    ranked and filtered as `options` (or its `fields` given as keywords) say, its mode
    aside."""
    _check_k(k)
    o = given(options, fields)
    file_ids = restrict(store, o.path_glob, o.tags, o.since, o.before)
    if file_ids == []:
        return []
    per_file = not o.all_chunks
    excluded = set(exclude_files)
    rows = _vector_rows(store, query, k, per_file, file_ids, excluded, o.exact, o.oversample)
    return _ranked(store, _top(rows, k, per_file, excluded), "semantic", o.min_score)


def search(
    store: Store,
    text: str,
    query: np.ndarray | None,
    k: int = 10,
    options: SearchOptions = DEFAULTS,
    exclude_files: Sequence[int] = (),
    **fields,
) -> list[Hit]:
    """The k best files (best chunk each) or chunks for a text query in `options.mode`:
    semantic (its vector, `query`), lexical (FTS5 bm25 on `text`; no vector needed) or
    hybrid (both lists fused by reciprocal rank); `fields` as `search_vector`'s."""
    o = given(options, fields)
    if o.mode == "semantic":
        return search_vector(store, query, k, o, exclude_files)
    _check_k(k)
    file_ids = restrict(store, o.path_glob, o.tags, o.since, o.before)
    if file_ids == []:
        return []
    per_file = not o.all_chunks
    excluded = set(exclude_files)
    depth = max(k * FUSION_DEPTH, FUSION_MIN)
    if o.mode == "hybrid":
        # The lexical query runs on a second connection in a thread while this one runs the
        # vector stage: SQLite releases the GIL, so a hybrid search costs about the slower
        # of the two, not their sum (README "Hybrid search").
        pending = _pool().submit(store.lexical, text, depth, file_ids, True)
        pending_files = (
            _pool().submit(_lexical_files, store, text, depth, file_ids, excluded, True)
            if per_file
            else None
        )
        k_vector = depth if o.exact or len(query) < COARSE_MIN_DIM else k
        try:
            vector = _vector_rows(
                store, query, k_vector, False, file_ids, excluded, o.exact, o.oversample
            )
        finally:
            # Never leave the thread on the store's second connection: a caller that closes
            # the store on an error would close it under the running query (a crash).
            wait([f for f in (pending, pending_files) if f is not None])
        lexical = [r for r in pending.result() if r[1] not in excluded]
        # The same top `depth` of the vector list, so two-stage and exact fuse alike.
        vector = sorted((r for r in vector if r[1] not in excluded), key=lambda r: (-r[2], r[0]))
        files = pending_files.result() if pending_files else None
        return _fuse(store, query, vector[:depth], lexical, files, k, o.min_score)
    if per_file:
        files = _lexical_files(store, text, k, file_ids, excluded)
        return _ranked(store, _file_hits(store, text, files, depth), "lexical", o.min_score)
    lexical = [r for r in store.lexical(text, depth, file_ids) if r[1] not in excluded]
    return _ranked(store, _top(lexical, k, False, excluded), "lexical", o.min_score)


def _lexical_files(store, text, k, file_ids, excluded, side=False) -> list[tuple[int, float]]:
    """The k best (file id, -bm25) over whole files (files_fts): a file is scored on all its
    words, so a note split into chunks is not outranked by its own chunks' rivals."""
    rows = store.lexical_files(text, k + len(excluded), file_ids, side)
    return [(f, s) for f, s in rows if f not in excluded][:k]


def _file_hits(store: Store, text: str, files: list[tuple[int, float]], depth: int) -> list[Row]:
    """(chunk, file, file score) for ranked files: each file shown at its best chunk among the
    top `depth` lexical chunks (its first chunk when none of them is in it)."""
    if not files:
        return []
    ids = {f for f, _ in files}
    best: dict[int, int] = {}
    # Unfiltered: FTS5 runs a query filtered by a rowid list once per rowid (~15x slower).
    for c, f, _ in store.lexical(text, depth):
        if f in ids:
            best.setdefault(f, c)
    missing = [f for f in ids if f not in best]
    if missing:
        best.update(store.first_chunks(missing))
    return [(best[f], f, s) for f, s in files if f in best]


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="jinaloc-lexical")
    return _POOL


def _fuse(store, query, vector: list[Row], lexical: list[Row], files, k, min_score):
    """Reciprocal rank fusion of the two lists (each best first), over files (`files`: the
    lexical (file, score) list from files_fts; a file's semantic rank is its best chunk's)
    or chunks (`files` None). Lexical hits beyond the vector list's depth join its end in
    cosine order, so a word match is never ranked as if its meaning were unknown."""
    per_file = files is not None
    seen = {c for c, _, _ in vector}
    wanted = [c for c, _, _ in lexical if c not in seen]
    if per_file:
        # A file ranked on its whole text with no chunk in either list joins at its first.
        have = {f for rows in (vector, lexical) for _, f, _ in rows}
        missing = [f for f, _ in files if f not in have]
        wanted += list(store.first_chunks(missing).values()) if missing else []
    extra = store.scores(query, wanted)
    vector = vector + sorted(extra, key=lambda r: (-r[2], r[0]))
    lists = {"semantic": vector, "lexical": lexical}
    # Ranks per chunk in each list, and per file (a file's semantic rank is its best chunk's).
    chunk_rank: dict[str, dict[int, int]] = {}
    file_rank: dict[str, dict[int, int]] = {}
    for name, rows in lists.items():
        chunk_rank[name] = {c: n for n, (c, _, _) in enumerate(rows, 1)}
        ranked: dict[int, int] = {}
        for _, f, _ in rows:
            ranked.setdefault(f, len(ranked) + 1)
        file_rank[name] = ranked
    if per_file:  # a file's lexical rank is its whole text's
        file_rank["lexical"] = {f: n for n, (f, _) in enumerate(files, 1)}

    def fused(ranks: dict[str, dict[int, int]], key: int) -> float:
        return sum(WEIGHTS[n] / (RRF_K + r[key]) for n, r in ranks.items() if key in r)

    file_of = {c: f for rows in lists.values() for c, f, _ in rows}
    chunks = sorted(file_of, key=lambda c: (-fused(chunk_rank, c), c))
    if per_file:
        best: dict[int, int] = {}
        for c in chunks:  # best fused chunk first: each file's shown chunk
            best.setdefault(file_of[c], c)
        ranked = sorted(best.items(), key=lambda fc: (-fused(file_rank, fc[0]), fc[1]))
        picked = [(c, f, fused(file_rank, f)) for f, c in ranked]
    else:
        picked = [(c, file_of[c], fused(chunk_rank, c)) for c in chunks]
    cosine = {c: s for c, _, s in vector}
    if min_score is not None:
        picked = [r for r in picked if cosine[r[0]] >= min_score]
    hits = _hits(store, picked[:k], "hybrid")
    scores = {c: s for c, _, s in lexical}
    file_scores = dict(files or ())
    ranks = file_rank if per_file else chunk_rank
    for hit in hits:
        key = hit.file_id if per_file else hit.chunk_id
        hit.semantic = Part(cosine[hit.chunk_id], ranks["semantic"].get(key))
        if key in ranks["lexical"]:
            lex = file_scores.get(key) if per_file else scores.get(hit.chunk_id)
            hit.lexical = Part(lex if lex is not None else 0.0, ranks["lexical"][key])
    return hits


def rerank_hits(
    hits: list[Hit],
    reranker,
    query: str,
    k: int,
    per_file: bool,
    instruction: str | None = None,
    progress=None,
) -> list[Hit]:
    """The first stage's candidate chunks reordered by a cross-encoder (reranker.Reranker),
    then the best chunk per file unless not `per_file`. Each chunk is scored as the index
    embeds it: title and heading path, then its text (trimmed to the reranker's budget)."""
    if not hits:
        return []
    texts = [embed_text(h.title, h.heading, h.text) for h in hits]
    scores = reranker.score(query, texts, instruction, progress)
    for rank, (hit, score) in enumerate(zip(hits, scores, strict=True), 1):
        hit.first_stage = Part(hit.score, rank)
        hit.rerank = Part(float(score), None)
    order = sorted(hits, key=lambda h: (-h.rerank.score, h.first_stage.rank))
    if per_file:
        seen: set[int] = set()
        order = [h for h in order if not (h.file_id in seen or seen.add(h.file_id))]
    for rank, hit in enumerate(order, 1):
        hit.rerank.rank = rank
        hit.score = hit.rerank.score
    return order[:k]


def _check_k(k: int) -> None:
    if k < 1:
        raise JinalocError("k must be at least 1")


def _vector_rows(store, query, k, per_file, file_ids, excluded, exact, oversample) -> list[Row]:
    """Candidates by cosine: the exact top k (`exact`, or too few dims for the coarse
    stage), else every chunk the coarse Hamming stage kept, rescored exactly."""
    import numpy as np

    query = np.asarray(query, dtype=np.float32)
    if exact or len(query) < COARSE_MIN_DIM:
        return store.exact(query, k, per_file, file_ids, list(excluded))
    wanted = candidates(k, oversample, len(query))
    while True:
        ids = store.knn_bits(query, wanted, file_ids)
        rows = store.scores(query, ids)
        # Done when k results came back, or the coarse stage returned every chunk it had.
        if len(_top(rows, k, per_file, excluded)) >= k:
            return rows
        if len(ids) < min(wanted, MAX_K) or wanted >= MAX_K:
            return rows
        wanted *= 2


def candidates(k: int, oversample: int, dim: int) -> int:
    """How many chunks the coarse stage keeps for k results."""
    return min(max(k * oversample, MIN_CANDIDATES, CANDIDATE_BITS // dim), MAX_K)


def _ranked(store: Store, rows: list[Row], mode: str, min_score: float | None) -> list[Hit]:
    """Hits of one list (semantic or lexical), best first, each with its score and rank in
    it; `min_score` on that list's score."""
    if min_score is not None:
        rows = [r for r in rows if r[2] >= min_score]
    hits = _hits(store, rows, mode)
    for rank, hit in enumerate(hits, 1):
        setattr(hit, mode, Part(hit.score, rank))
    return hits


def _hits(store: Store, rows: list[Row], mode: str) -> list[Hit]:
    details = store.chunk_details([r[0] for r in rows])
    return [Hit(**details[c], score=s, chunk_id=c, file_id=f, mode=mode) for c, f, s in rows]


def _top(
    rows: list[tuple[int, int, float]], k: int, per_file: bool, excluded: set[int]
) -> list[tuple[int, int, float]]:
    rows = sorted((r for r in rows if r[1] not in excluded), key=lambda r: (-r[2], r[0]))
    if per_file:
        seen: set[int] = set()
        rows = [r for r in rows if not (r[1] in seen or seen.add(r[1]))]
    return rows[:k]


def embed_query(embedder, text: str, dim: int) -> np.ndarray:
    """A search query with the retrieval adapter and the query prompt."""
    return embedder.embed([text], task="retrieval", prompt="query", dim=dim)[0]


def file_vector(store: Store, file_id: int) -> np.ndarray:
    """One vector for a whole indexed file: the normalized mean of its chunk vectors."""
    from ..vectors import note_vectors

    vectors = store.file_vectors(file_id)
    if not len(vectors):
        raise JinalocError("that file has no indexed chunks")
    return note_vectors(vectors, [len(vectors)])[0]
