"""Searching an index: a coarse Hamming stage on sign bits, then exact cosine rescoring.

The coarse stage takes the k x oversample nearest chunks by Hamming distance (vec0 KNN on
the bit vectors); their float vectors are then scored exactly. `exact=True`, or an index of
fewer than 256 dims, scores every chunk instead. Scores are cosine similarities computed by
the same SQL function in both paths, so the two agree exactly whenever the coarse stage
kept the true top results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pathspec

from .errors import JinalocError
from .store import MAX_K, Store
from .vectors import note_vectors

# Coarse candidates per wanted result; see README "Defaults" for the measurements.
DEFAULT_OVERSAMPLE = 10
# A floor for small k (k=1 would get 10): with few bits many chunks tie on Hamming distance.
# Kept low because vec0's bit KNN costs grow with k (100k chunks: 7 ms at k=10, 30 ms at
# k=100, 130 ms at k=256), while rescoring is cheap (256 float vectors by id: 3 ms).
MIN_CANDIDATES = 64
# Below this many bits Hamming distance ranks too coarsely to trust as the first stage
# (recall@10 at x10: 0.90 with 128 bits, 0.995 with 256); such indexes are scanned exactly,
# which their small vectors make cheap.
COARSE_MIN_DIM = 256


@dataclass
class Hit:
    path: str  # absolute
    rel: str  # relative to its indexed root
    title: str
    start_line: int
    end_line: int
    heading: list[str]
    score: float
    text: str
    chunk_id: int
    file_id: int

    def display_path(self) -> str:
        """Relative to the working directory when inside it (like grep), else absolute."""
        try:
            return (
                os.path.relpath(self.path)
                if Path(self.path).is_relative_to(Path.cwd())
                else self.path
            )
        except ValueError:  # another drive on Windows
            return self.path

    def to_json(self) -> dict:
        return {
            "path": self.display_path(),
            "start_line": self.start_line,
            "end_line": self.end_line,
            "heading": " > ".join(self.heading),
            "title": self.title,
            "score": round(self.score, 6),
            "text": self.text,
        }


def matching_files(store: Store, glob: str) -> list[int]:
    """Ids of files whose root-relative or displayed path matches a gitignore-style glob."""
    spec = pathspec.GitIgnoreSpec.from_lines([glob])
    cwd = Path.cwd()
    ids = []
    for file_id, path, rel in store.file_paths():
        shown = os.path.relpath(path) if Path(path).is_relative_to(cwd) else path.lstrip("/")
        if spec.match_file(rel) or spec.match_file(shown):
            ids.append(file_id)
    return ids


def search_vector(
    store: Store,
    query: np.ndarray,
    k: int = 10,
    *,
    exact: bool = False,
    oversample: int = DEFAULT_OVERSAMPLE,
    path_glob: str | None = None,
    min_score: float | None = None,
    all_chunks: bool = False,
    exclude_files: Sequence[int] = (),
) -> list[Hit]:
    """The k best chunks (`all_chunks`) or files (best chunk each) for a query vector."""
    if k < 1:
        raise JinalocError("k must be at least 1")
    query = np.asarray(query, dtype=np.float32)
    file_ids = matching_files(store, path_glob) if path_glob else None
    if file_ids == []:
        return []
    per_file = not all_chunks
    excluded = set(exclude_files)
    if exact or len(query) < COARSE_MIN_DIM:
        rows = store.exact(query, k, per_file, file_ids, list(excluded))
    else:
        wanted = max(k * oversample, MIN_CANDIDATES)
        while True:
            ids = store.knn_bits(query, wanted, file_ids)
            rows = _top(store.scores(query, ids), k, per_file, excluded)
            # Done when k results came back, or the coarse stage returned every chunk it had.
            if len(rows) >= k or len(ids) < min(wanted, MAX_K) or wanted >= MAX_K:
                break
            wanted *= 2
    if min_score is not None:
        rows = [r for r in rows if r[2] >= min_score]
    details = store.chunk_details([r[0] for r in rows])
    return [Hit(**details[c], score=s, chunk_id=c, file_id=f) for c, f, s in rows]


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
    vectors = store.file_vectors(file_id)
    if not len(vectors):
        raise JinalocError("that file has no indexed chunks")
    return note_vectors(vectors, [len(vectors)])[0]
