"""Near-duplicate detection on unit vectors: blockwise cosine above a threshold, union-find."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..defaults import DEFAULT_THRESHOLD
from ..errors import JinalocError

# Rows per tile of the similarity matrix: a tile is BLOCK x BLOCK float32 (16 MB).
BLOCK = 2048


@dataclass
class Group:
    members: list[int]  # item indices, in input order
    scores: list[float]  # each member's best similarity to another member


def check_threshold(threshold: float) -> float:
    if not -1.0 <= threshold <= 1.0:
        raise JinalocError(f"threshold must be a cosine between -1 and 1, got {threshold}")
    return threshold


class Distinct:
    """Identical texts are embedded once: row u of the matrix is a distinct text and
    `copies[u]` lists the items (numbered in the order added) that had it."""

    def __init__(self) -> None:
        self._rows: dict[bytes, int] = {}  # digest, not text: whole files may stream through
        self.copies: list[list[int]] = []
        self.count = 0

    def add(self, texts: Iterable[str]) -> list[str]:
        """Record the items; return the texts not seen before, in order."""
        new = []
        for text in texts:
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = len(self.copies)
                self.copies.append([])
                new.append(text)
            self.copies[row].append(self.count)
            self.count += 1
        return new


def similar_pairs(
    x: np.ndarray, threshold: float, block: int = BLOCK
) -> Iterator[tuple[int, int, float]]:
    """Pairs (i < j) of rows with cosine >= threshold, one tile of the upper triangle at a
    time so memory stays bounded whatever the number of rows."""
    x = np.asarray(x, dtype=np.float32)
    for r in range(0, len(x), block):
        rows = x[r : r + block]
        for c in range(r, len(x), block):
            sims = rows @ x[c : c + block].T
            ii, jj = np.nonzero(sims >= threshold)
            for i, j in zip(ii.tolist(), jj.tolist(), strict=True):
                if r + i < c + j:
                    yield r + i, c + j, float(sims[i, j])


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _copies(n: int, copies: Sequence[Sequence[int]] | None) -> Sequence[Sequence[int]]:
    return copies if copies is not None else [[i] for i in range(n)]


def duplicate_groups(
    x: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    copies: Sequence[Sequence[int]] | None = None,
    block: int = BLOCK,
) -> list[Group]:
    """Groups of near-duplicates (connected components of the >= threshold graph).

    Rows of `x` are distinct texts; `copies[u]` lists the input items with the text of row u
    (identical texts are embedded once and are duplicates at similarity 1). Groups come in
    the order of their first item."""
    check_threshold(threshold)
    copies = _copies(len(x), copies)
    uf = UnionFind(len(x))
    best = np.full(len(x), -np.inf)
    for i, j, s in similar_pairs(x, threshold, block):
        uf.union(i, j)
        best[i] = max(best[i], s)
        best[j] = max(best[j], s)
    components: dict[int, list[int]] = {}
    for u in range(len(x)):
        components.setdefault(uf.find(u), []).append(u)
    groups = []
    for rows in components.values():
        items = sorted((i, 1.0 if len(copies[u]) > 1 else best[u]) for u in rows for i in copies[u])
        if len(items) > 1:
            groups.append(Group([i for i, _ in items], [float(s) for _, s in items]))
    groups.sort(key=lambda g: g.members[0])
    return groups


def duplicate_pairs(
    x: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    copies: Sequence[Sequence[int]] | None = None,
    block: int = BLOCK,
) -> list[tuple[int, int, float]]:
    """Every pair of input items (i < j) at or above the threshold, most similar first."""
    check_threshold(threshold)
    copies = _copies(len(x), copies)
    pairs = [(a, b, 1.0) for items in copies for n, a in enumerate(items) for b in items[n + 1 :]]
    for u, v, s in similar_pairs(x, threshold, block):
        pairs.extend((min(a, b), max(a, b), s) for a in copies[u] for b in copies[v])
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs
