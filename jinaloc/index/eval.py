"""What dims, quantization and search modes cost in recall, measured on one index.

Queries with known answers (read from a file, or generated from the index by
`generate_queries`) are embedded once at the index dim. Every vector configuration is then
scored in numpy over all stored chunks, read in blocks of whole files: Matryoshka dims (the
stored vectors sliced and renormalized, which equals embedding at that dim), float32, int8
and sign bits, and bits then float rescoring as `search` does it. Each file counts by its
best chunk, as in `search`. The search modes run through `search.search` itself, at the
index's own configuration.

Scalar int8: per dimension, the absolute maximum over the index's chunks (at that dim, after
renormalizing) maps to 127; chunks and queries are both rounded to int8 on that scale and
scored by the dot product of the dequantized values (a per-dimension weighted int8 dot).

Generated queries (`generate_queries`), from each sampled note:
- heading: the text of one of its section headings that no other note has, never one that
  holds the note's title. The heading is part of the embedded text (heading path and chunk),
  so this measures finding a note by its own topic words; it favours lexical matching.
- passage: one sentence of one of its chunks (up to PASSAGE_WORDS words, none holding the
  title and none that another chunk of the note repeats), from notes of at least two
  chunks. That chunk is left out of the candidates, so the note must be found through its
  other chunks: "the rest of the note is about this".
The source note is the only relevant answer. Neither kind measures questions phrased in
other words than the note's, nor notes that answer without sharing its words."""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..chunking import is_heading
from ..errors import IndexEmpty, JinalocError
from ..reader import read_input
from ..vectors import l2_normalize
from .blocks import at_dim
from .options import MODES, SearchOptions
from .search import candidates, search
from .store import MAX_K, Store

KINDS = ("file", "heading", "passage")
OVERSAMPLES = (2, 5, 10, 20)
# Chunks scored per numpy block (whole files): bounds memory at queries x block floats.
BLOCK = 4096
NDCG_AT = 10
# Recall within this of full-dim float counts as "no loss" for the recommendation.
TOLERANCE = 0.01
MIN_DIM = 32
PASSAGE_WORDS = 30
PASSAGE_MIN_WORDS = 6
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")

# (query, candidate chunk texts) -> one score per text, higher is better: the shape of a
# cross-encoder reranker, run on hybrid's best files (`evaluate(rerank=...)`).
RerankFn = Callable[[str, list[str]], Sequence[float]]
# (stage, done, total) for a progress display.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Query:
    text: str
    relevant: tuple[str, ...]  # absolute indexed paths
    kind: str = "file"  # file, heading or passage
    held_out: int | None = None  # a chunk id left out of the candidates (passage queries)


@dataclass
class Config:
    """One way to store and search the vectors (or one search mode)."""

    name: str
    family: str  # float, int8, bits, rescore or mode
    dim: int | None = None
    oversample: int | None = None
    mode: str | None = None
    bytes_per_chunk: float | None = None


@dataclass
class Row:
    config: Config
    recall: float
    mrr: float
    ndcg: float
    overlap: float  # top-k files shared with full-dim float, as a fraction of k
    ms_per_query: float
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            **asdict(self.config),
            "recall": round(self.recall, 4),
            "mrr": round(self.mrr, 4),
            "ndcg": round(self.ndcg, 4),
            "overlap": round(self.overlap, 4),
            "ms_per_query": round(self.ms_per_query, 3),
            "by_kind": {
                kind: {m: round(v, 4) for m, v in values.items()}
                for kind, values in self.by_kind.items()
            },
        }


@dataclass
class Recommendation:
    """What to build or pass, from the measured rows (None where nothing qualifies)."""

    reference: Row  # full-dim float
    storage: Row | None  # smallest bytes per chunk within TOLERANCE of the reference
    buildable: Row | None  # the same among what jinaloc builds (float at a dim)
    oversample: Row | None  # smallest rescoring factor within TOLERANCE (index dim)
    mode: Row | None  # the mode with the best recall

    def to_json(self) -> dict:
        return {
            name: (getattr(self, name).config.name if getattr(self, name) else None)
            for name in ("reference", "storage", "buildable", "oversample", "mode")
        }


@dataclass
class Result:
    db: str
    model: str
    dim: int
    files: int
    chunks: int
    k: int
    queries: int
    kinds: dict[str, int]
    embed_ms_per_query: float
    rows: list[Row]
    recommendation: Recommendation

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "recommendation")}
        out["embed_ms_per_query"] = round(self.embed_ms_per_query, 3)
        out["rows"] = [r.to_json() for r in self.rows]
        out["recommendation"] = self.recommendation.to_json()
        return out


# metrics


def metrics(ranked: Sequence, relevant: set, k: int) -> tuple[float, float, float]:
    """(recall@k, MRR@k, nDCG@10) of one ranked list against a set of relevant items
    (binary relevance; the ideal list puts every relevant item first)."""
    if not relevant:
        raise ValueError("a query needs at least one relevant answer")
    top = list(ranked[:k])
    recall = len(relevant.intersection(top)) / len(relevant)
    mrr = next((1.0 / n for n, item in enumerate(top, 1) if item in relevant), 0.0)
    dcg = sum(1.0 / math.log2(n + 1) for n, x in enumerate(ranked[:NDCG_AT], 1) if x in relevant)
    ideal = sum(1.0 / math.log2(n + 1) for n in range(1, min(len(relevant), NDCG_AT) + 1))
    return recall, mrr, dcg / ideal


def overlap(ranked: Sequence, reference: Sequence, k: int) -> float:
    ref = set(reference[:k])
    return len(ref.intersection(ranked[:k])) / len(ref) if ref else 1.0


# queries


def read_queries(path: Path, store: Store) -> list[Query]:
    """Queries with their relevant files from JSON lines ({"query", "relevant": [paths]}) or
    `query<TAB>path[<TAB>path...]` lines; paths relative to the working directory or
    absolute. Lines with the same query merge their answers."""
    import json

    indexed = {p for _, p, _ in store.file_paths()}
    merged: dict[str, list[str]] = {}
    for n, line in enumerate(read_input(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{path} line {n}"
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise JinalocError(f"{where}: not valid JSON ({e.msg})") from None
            text, paths = obj.get("query"), obj.get("relevant")
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(text, str) or not isinstance(paths, list) or not paths:
                raise JinalocError(f'{where}: expected {{"query": text, "relevant": [paths]}}')
        elif "\t" in line:
            text, *paths = line.split("\t")
        else:
            raise JinalocError(f"{where}: expected a JSON object or query<TAB>path")
        text = text.strip() if isinstance(text, str) else ""
        if not text:
            raise JinalocError(f"{where}: the query is empty")
        answers = merged.setdefault(text, [])
        for p in paths:
            found = _indexed_path(str(p).strip(), indexed)
            if found is None:
                raise JinalocError(f"{where}: {p} is not in the index")
            if found not in answers:
                answers.append(found)
    if not merged:
        raise JinalocError(f"{path}: no queries")
    return [Query(text, tuple(paths)) for text, paths in merged.items()]


def _indexed_path(given: str, indexed: set[str]) -> str | None:
    p = Path(given).expanduser()
    for candidate in (os.path.normpath(p.absolute()), str(p.resolve())):
        if candidate in indexed:
            return candidate
    return None


def generate_queries(store: Store, sample: int = 200, seed: int = 0) -> list[Query]:
    """Known-item queries from `sample` notes picked with `seed` (module docstring): the
    same index, sample and seed give the same queries."""
    heading_files: dict[str, int] = {}
    paths = []
    for doc in store.iter_documents():
        paths.append(doc.path)
        for h in {h.casefold() for path in doc.headings for h in path}:
            heading_files[h] = heading_files.get(h, 0) + 1
    rng = random.Random(seed)
    picked = sorted(rng.sample(paths, min(sample, len(paths))))
    queries = []
    for doc in store.iter_documents(picked):
        title = doc.title.casefold()
        headings = sorted(
            {
                h
                for path in doc.headings
                for h in path
                if heading_files[h.casefold()] == 1
                and title not in h.casefold()
                and any(c.isalpha() for c in h)
            }
        )
        if headings:
            queries.append(Query(rng.choice(headings), (doc.path,), "heading"))
        if len(doc.texts) < 2:
            continue
        # Whitespace-normalized chunks: a sentence that another chunk repeats (the overlap of
        # a split block) would not be held out with its own chunk.
        flat = [" ".join(text.split()) for text in doc.texts]
        sentences = [
            (seq, s)
            for seq, text in enumerate(doc.texts)
            for s in _sentences(text, doc.path)
            if title not in s.casefold()
            and not any(s in other for n, other in enumerate(flat) if n != seq)
        ]
        if sentences:
            seq, text = rng.choice(sentences)
            queries.append(Query(text, (doc.path,), "passage", store.chunk_ids(doc.file_id)[seq]))
    return queries


def _sentences(text: str, path: str) -> list[str]:
    """Sentences of a chunk's prose (no heading or fence lines), cut to PASSAGE_WORDS."""
    lines = [
        _LIST_MARK.sub("", line)
        for line in text.splitlines()
        if not is_heading(line, path) and not line.lstrip().startswith(("```", "~~~"))
    ]
    out = []
    for paragraph in "\n".join(lines).split("\n\n"):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            words = sentence.split()
            if len(words) >= PASSAGE_MIN_WORDS:
                out.append(" ".join(words[:PASSAGE_WORDS]))
    return out


# configurations


def eval_dims(trained: Sequence[int], dim: int) -> list[int]:
    """Dims to measure: the model's trained Matryoshka dims from MIN_DIM up to the index
    dim (else powers of two), always ending at the index dim."""
    below = [d for d in trained if MIN_DIM <= d < dim]
    if not trained:
        below = [1 << n for n in range(5, 16) if MIN_DIM <= 1 << n < dim]
    return [*below, dim]


def vector_configs(dims: Sequence[int], k: int, oversamples=OVERSAMPLES) -> list[Config]:
    """float32, int8 and bits at each dim; bits then float rescoring at the index dim, one per
    distinct candidate count (as `search` counts them: search.candidates)."""
    out = [Config(f"float32@{d}", "float", d, bytes_per_chunk=4 * d) for d in dims]
    out += [Config(f"int8@{d}", "int8", d, bytes_per_chunk=d) for d in dims]
    out += [Config(f"bits@{d}", "bits", d, bytes_per_chunk=d / 8) for d in dims]
    full = dims[-1]
    seen = set()
    for m in sorted(oversamples):
        wanted = candidates(k, m, full)
        if wanted not in seen:
            seen.add(wanted)
            out.append(
                Config(f"bits→float32@{full} x{m}", "rescore", full, m, None, full / 8 + 4 * full)
            )
    return out


def mode_configs(dim: int, rerank: bool = False) -> list[Config]:
    # The index stores bits and floats per chunk; the lexical index's size is not measured.
    out = [
        Config(
            m, "mode", dim, mode=m, bytes_per_chunk=dim / 8 + 4 * dim if m == "semantic" else None
        )
        for m in MODES
    ]
    if rerank:
        out.append(Config("hybrid+rerank", "mode", dim, mode="hybrid+rerank"))
    return out


# scoring


def _blocks(store: Store, size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """(chunk ids, file ids, float vectors) of every chunk, ordered by file, in blocks of
    whole files of about `size` chunks."""
    cursor = store.chunk_vectors_by_file()
    dim = store.dim or 0
    pending: list = []
    while True:
        fetched = cursor.fetchmany(size)
        rows = pending + fetched
        if not rows:
            return
        pending = []
        if fetched:  # more may follow: hold the last file back, it may go on
            cut = len(rows)
            while cut and rows[cut - 1][1] == rows[-1][1]:
                cut -= 1
            if not cut:  # one file bigger than a block
                pending = rows
                continue
            rows, pending = rows[:cut], rows[cut:]
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        files = np.array([r[1] for r in rows], dtype=np.int64)
        yield ids, files, at_dim([r[2] for r in rows], dim)


class _TopFiles:
    """Each query's best `n` files so far (file score = its best chunk's)."""

    def __init__(self, queries: int, n: int):
        self.n = n
        self.scores = np.zeros((queries, 0), np.float32)
        self.files = np.zeros((queries, 0), np.int64)

    def add(self, scores: np.ndarray, files: np.ndarray) -> None:
        """`scores` (queries, chunks) of chunks of `files` (sorted, each file contiguous)."""
        starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
        best = np.maximum.reduceat(scores, starts, axis=1)
        s = np.concatenate([self.scores, best], axis=1)
        f = np.concatenate([self.files, np.broadcast_to(files[starts], best.shape)], axis=1)
        if s.shape[1] > self.n:  # ties go to the lower file id, whatever the block order
            keep = np.lexsort((f, -s), axis=1)[:, : self.n]
            s, f = np.take_along_axis(s, keep, 1), np.take_along_axis(f, keep, 1)
        self.scores, self.files = s, f

    def ranked(self) -> list[list[int]]:
        out = []
        for s, f in zip(self.scores, self.files, strict=True):
            order = np.lexsort((f, -s))
            out.append([int(f[i]) for i in order if s[i] > -np.inf])
        return out


class _TopChunks:
    """Each query's best `n` chunks by the +-1 dot product of their sign bits (an integer),
    ties to the lower chunk id, with their float scores kept beside it for rescoring."""

    def __init__(self, queries: int, n: int):
        self.n = n
        self.key = np.zeros((queries, 0), np.int64)
        self.other = np.zeros((queries, 0), np.float32)
        self.ids = np.zeros((queries, 0), np.int64)
        self.files = np.zeros((queries, 0), np.int64)

    def add(self, key, other, ids, files) -> None:
        shape = key.shape
        key = np.where(np.isfinite(key), key, _MASKED).astype(np.int64)
        parts = [
            np.concatenate([self.key, key], 1),
            np.concatenate([self.other, other], 1),
            np.concatenate([self.ids, np.broadcast_to(ids, shape)], 1),
            np.concatenate([self.files, np.broadcast_to(files, shape)], 1),
        ]
        if parts[0].shape[1] > self.n:
            keep = np.argpartition(-_rank(parts[0], parts[2]), self.n - 1, axis=1)[:, : self.n]
            parts = [np.take_along_axis(p, keep, 1) for p in parts]
        self.key, self.other, self.ids, self.files = parts

    def rescored(self, wanted: int, k: int, n: int) -> list[list[int]]:
        """Per query: the top `wanted` chunks by key, then files by the other score; like
        `search`, doubling `wanted` while fewer than k files came back."""
        out = []
        for key, other, ids, files in zip(self.key, self.other, self.ids, self.files, strict=True):
            order = np.argsort(-_rank(key, ids))
            order = order[key[order] > _MASKED]
            w = wanted
            while True:
                cand = order[:w]
                ranked = _files_by_score(other[cand], ids[cand], files[cand])
                if len(ranked) >= k or w >= min(len(order), MAX_K):
                    break
                w *= 2
            out.append(ranked[:n])
        return out


# Held-out chunks' bit score: below any +-1 dot product of up to 2^20 dims.
_MASKED = -(1 << 20)


def _rank(key: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One distinct integer per chunk, larger first: the bit score, then the lower chunk id
    (ids stay below 2^40), so argpartition needs no tie-breaking."""
    return (key << 40) - ids


def _files_by_score(scores, ids, files) -> list[int]:
    seen: set[int] = set()
    ranked = []
    for i in np.lexsort((ids, -scores)):
        f = int(files[i])
        if f not in seen:
            seen.add(f)
            ranked.append(f)
    return ranked


def _mask(scores: np.ndarray, cells: list[tuple[int, int]]) -> np.ndarray:
    """Held-out chunks: (query, column) cells set to -inf, so they never rank."""
    for q, i in cells:
        scores[q, i] = -np.inf
    return scores


def _signs(x: np.ndarray) -> np.ndarray:
    """Sign bits as +-1 (bit = x > 0, as pack_bits): their dot product is dim - 2 x Hamming."""
    return np.where(x > 0, np.float32(1), np.float32(-1))


def _int8(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Round to int8 on a per-dimension scale; returned dequantized (float32)."""
    q = np.clip(np.rint(x / scale * 127), -127, 127)
    return (q * (scale / 127)).astype(np.float32)


def scan(
    store: Store,
    vectors: np.ndarray,
    held_out: Sequence[int | None],
    configs: Sequence[Config],
    k: int,
    progress: ProgressFn | None = None,
) -> dict[str, tuple[list[list[int]], float]]:
    """Each vector config's ranked files per query (at least max(k, NDCG_AT) deep) and its
    scoring time in ms per query, over every chunk of the index."""
    n = max(k, NDCG_AT)
    nq = len(vectors)
    dims = sorted({c.dim for c in configs})
    full = dims[-1]
    queries = {d: l2_normalize(vectors[:, :d]) for d in dims}
    total = store.counts()["chunks"]
    # int8 scales: a first pass over the chunks, per dim.
    scale = {d: np.full(d, 1e-12, np.float32) for d in dims}
    if any(c.family == "int8" for c in configs):
        done = 0
        for _, _, x in _blocks(store, BLOCK):
            for d in dims:
                scale[d] = np.maximum(scale[d], np.abs(l2_normalize(x[:, :d])).max(axis=0))
            done += len(x)
            if progress:
                progress("calibrating int8", done, total)
    # Queries and chunks in each family's stored form; making those is storage-time work,
    # left out of the timings, which cover scoring and ranking only.
    families = {(c.dim, c.family) for c in configs if c.family != "rescore"}
    if any(c.family == "rescore" for c in configs):
        families |= {(full, "float"), (full, "bits")}
    encode = {
        "float": lambda v, d: v,
        "int8": lambda v, d: _int8(v, scale[d]),
        "bits": lambda v, d: _signs(v),
    }
    asked = {(d, f): encode[f](queries[d], d) for d, f in families}
    for a in asked.values():  # warm BLAS up, so the first config timed is not the slowest
        _ = a[:8] @ a[:8].T
    top = {c.name: _TopFiles(nq, n) for c in configs if c.family != "rescore"}
    rescore = [c for c in configs if c.family == "rescore"]
    wanted = {c.name: candidates(k, c.oversample, c.dim) for c in rescore}
    chunks = _TopChunks(nq, min(4 * max(wanted.values()), MAX_K)) if rescore else None
    seconds = dict.fromkeys([c.name for c in configs], 0.0)
    holds = {h: q for q, h in enumerate(held_out) if h is not None}
    done = 0
    for ids, files, x in _blocks(store, BLOCK):
        mask = [(q, i) for i, c in enumerate(ids.tolist()) if (q := holds.get(c)) is not None]
        unit = {d: l2_normalize(x[:, :d]) for d in dims}
        stored = {(d, f): encode[f](unit[d], d) for d, f in families}
        for c in configs:
            if c.family == "rescore":
                continue
            t = time.perf_counter()
            scores = asked[c.dim, c.family] @ stored[c.dim, c.family].T
            top[c.name].add(_mask(scores, mask), files)
            seconds[c.name] += time.perf_counter() - t
        if chunks is not None:
            t = time.perf_counter()
            hamming = asked[full, "bits"] @ stored[full, "bits"].T
            cosine = asked[full, "float"] @ stored[full, "float"].T
            chunks.add(_mask(hamming, mask), _mask(cosine, mask), ids, files)
            share = (time.perf_counter() - t) / len(rescore)
            for c in rescore:
                seconds[c.name] += share
        done += len(ids)
        if progress:
            progress("scoring chunks", done, total)
    out = {name: (t.ranked(), seconds[name]) for name, t in top.items()}
    for c in rescore:
        t = time.perf_counter()
        ranked = chunks.rescored(wanted[c.name], k, n)
        out[c.name] = (ranked, seconds[c.name] + time.perf_counter() - t)
    return {name: (ranked, 1000 * s / max(nq, 1)) for name, (ranked, s) in out.items()}


def run_modes(
    store: Store,
    queries: Sequence[Query],
    vectors: np.ndarray,
    k: int,
    rerank: RerankFn | None = None,
    rerank_depth: int = 30,
    progress: ProgressFn | None = None,
) -> dict[str, tuple[list[list[int]], float]]:
    """Each search mode's ranked files per query, through `search.search` at the index's own
    configuration, and its time in ms per query (the query vector embedded beforehand).
    A held-out chunk is dropped from chunk hits (`all_chunks`) and the rest kept by file; in
    hybrid mode that fuses chunk ranks rather than file ranks."""
    n = max(k, NDCG_AT)
    names = [*MODES, *(["hybrid+rerank"] if rerank else [])]
    out: dict[str, tuple[list[list[int]], float]] = {m: ([], 0.0) for m in names}
    for i, (query, vector) in enumerate(zip(queries, vectors, strict=True)):
        for mode in MODES:
            t = time.perf_counter()
            ranked = _search_files(store, query, vector, mode, n)
            ranked_list, seconds = out[mode]
            out[mode] = (ranked_list + [ranked], seconds + time.perf_counter() - t)
        if rerank:
            t = time.perf_counter()
            hits = _search_hits(store, query, vector, "hybrid", max(n, rerank_depth))
            scores = list(rerank(query.text, [h.text for h in hits]))
            order = sorted(range(len(hits)), key=lambda j: (-scores[j], j))
            ranked_list, seconds = out["hybrid+rerank"]
            out["hybrid+rerank"] = (
                ranked_list + [[hits[j].file_id for j in order][:n]],
                seconds + time.perf_counter() - t,
            )
        if progress:
            progress("searching", i + 1, len(queries))
    return {m: (ranked, 1000 * s / max(len(queries), 1)) for m, (ranked, s) in out.items()}


def _search_files(store, query: Query, vector, mode: str, n: int) -> list[int]:
    return [h.file_id for h in _search_hits(store, query, vector, mode, n)]


def _search_hits(store, query: Query, vector, mode: str, n: int) -> list:
    """The best `n` files' hits (best chunk each), without the query's held-out chunk."""
    if query.held_out is None:
        return search(store, query.text, vector, n, SearchOptions(mode=mode))
    wanted = 4 * n
    while True:
        hits = search(store, query.text, vector, wanted, SearchOptions(mode=mode, all_chunks=True))
        kept: dict[int, object] = {}
        for h in hits:
            if h.chunk_id != query.held_out:
                kept.setdefault(h.file_id, h)
        if len(kept) >= n or len(hits) < wanted or wanted >= MAX_K:
            return list(kept.values())[:n]
        wanted = min(2 * wanted, MAX_K)


# the whole evaluation


def score_rows(
    configs: Sequence[Config],
    rankings: dict[str, tuple[list[list[int]], float]],
    queries: Sequence[Query],
    relevant: Sequence[set[int]],
    reference: str,
    k: int,
) -> list[Row]:
    """Mean metrics per config (and per query kind), overlap against `reference`."""
    ref = rankings[reference][0]
    rows = []
    for c in configs:
        ranked, ms = rankings[c.name]
        per = np.array([metrics(r, rel, k) for r, rel in zip(ranked, relevant, strict=True)])
        shared = [overlap(r, f, k) for r, f in zip(ranked, ref, strict=True)]
        by_kind = {}
        for kind in KINDS:
            pick = [i for i, q in enumerate(queries) if q.kind == kind]
            if pick:
                r, m, g = per[pick].mean(axis=0)
                by_kind[kind] = {"recall": r, "mrr": m, "ndcg": g}
        r, m, g = per.mean(axis=0)
        rows.append(Row(c, float(r), float(m), float(g), float(np.mean(shared)), ms, by_kind))
    return rows


def recommend(rows: Sequence[Row], reference: str) -> Recommendation:
    ref = next(r for r in rows if r.config.name == reference)
    floor = ref.recall - TOLERANCE - 1e-9

    def smallest(candidates) -> Row | None:
        ok = [r for r in candidates if r.recall >= floor]
        return min(ok, key=lambda r: (r.config.bytes_per_chunk, -r.recall)) if ok else None

    vector = [r for r in rows if r.config.family != "mode"]
    rescore = [r for r in rows if r.config.family == "rescore" and r.recall >= floor]
    modes = [r for r in rows if r.config.family == "mode"]
    return Recommendation(
        ref,
        smallest(vector),
        smallest([r for r in vector if r.config.family == "float"]),
        min(rescore, key=lambda r: r.config.oversample) if rescore else None,
        max(modes, key=lambda r: (r.recall, r.ndcg)) if modes else None,
    )


def evaluate(
    store: Store,
    embedder,
    dim: int,
    queries: Sequence[Query],
    k: int = 10,
    *,
    oversamples: Sequence[int] = OVERSAMPLES,
    rerank: RerankFn | None = None,
    progress: ProgressFn | None = None,
) -> Result:
    """Every configuration of module docstring measured on `queries` over the index in
    `store` (built at `dim` with `embedder`'s model)."""
    if k < 1:
        raise JinalocError("k must be at least 1")
    counts = store.counts()
    if not counts["chunks"]:
        raise IndexEmpty(store.path)
    if not queries:
        raise JinalocError("no queries to evaluate")
    ids = {p: f for f, p, _ in store.file_paths()}
    relevant = [{ids[p] for p in q.relevant} for q in queries]
    embedded = 0

    def step(texts: int, tokens: int) -> None:
        nonlocal embedded
        embedded += texts
        progress("embedding queries", embedded, len(queries))

    t = time.perf_counter()
    vectors = embedder.embed(
        [q.text for q in queries],
        task="retrieval",
        prompt="query",
        dim=dim,
        progress=step if progress else None,
    )
    embed_ms = 1000 * (time.perf_counter() - t) / len(queries)
    dims = eval_dims(embedder.spec.matryoshka_dims, dim)
    configs = vector_configs(dims, k, oversamples)
    rankings = scan(store, vectors, [q.held_out for q in queries], configs, k, progress)
    modes = mode_configs(dim, rerank is not None)
    rankings.update(run_modes(store, queries, vectors, k, rerank, progress=progress))
    reference = f"float32@{dim}"
    rows = score_rows([*configs, *modes], rankings, queries, relevant, reference, k)
    kinds = {kind: sum(q.kind == kind for q in queries) for kind in KINDS}
    return Result(
        str(store.path),
        embedder.spec.name,
        dim,
        counts["files"],
        counts["chunks"],
        k,
        len(queries),
        {kind: n for kind, n in kinds.items() if n},
        embed_ms,
        rows,
        recommend(rows, reference),
    )
