"""Clustering unit vectors: spherical k-means, with k given or estimated by silhouette."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..defaults import DEFAULT_MAX_K
from ..embedder import Embeds
from ..errors import JinalocError
from ..vectors import l2_normalize

# k is estimated on at most this many rows (a seeded sample); the final fit uses every row.
ESTIMATE_SAMPLE = 2000


@dataclass
class KMeans:
    labels: np.ndarray  # int (n,), cluster of each row, 0..k-1
    centroids: np.ndarray  # float32 (k, dim), unit length
    inertia: float  # sum of (1 - cosine to own centroid)


@dataclass
class Cluster:
    members: list[int]  # row indices, closest to the centroid first
    scores: list[float]  # cosine of each member to the centroid

    @property
    def representative(self) -> int:
        return self.members[0]


@dataclass
class Clustering:
    clusters: list[Cluster]  # largest first
    k: int
    estimated: bool  # k chosen by silhouette rather than given
    silhouette: float | None  # mean silhouette (cosine distance); None for a single cluster


def _cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, dim) sum of each cluster's rows: a one-hot matmul, far faster than np.add.at."""
    onehot = np.zeros((k, len(x)), x.dtype)
    onehot[labels, np.arange(len(x))] = 1
    return onehot @ x


def _init_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on squared chord distance (2 - 2 cos) between unit vectors."""
    n = len(x)
    chosen = [int(rng.integers(n))]
    dist = np.maximum(2.0 - 2.0 * (x @ x[chosen[0]]), 0.0)
    for _ in range(1, k):
        total = float(dist.sum())
        # Fewer distinct points than k: any point will do, the empty cluster is dropped later.
        i = int(rng.choice(n, p=dist / total)) if total > 1e-12 else int(rng.integers(n))
        chosen.append(i)
        dist = np.minimum(dist, np.maximum(2.0 - 2.0 * (x @ x[i]), 0.0))
    return x[chosen].copy()


def _lloyd(x: np.ndarray, centroids: np.ndarray, max_iter: int) -> KMeans:
    labels = np.full(len(x), -1)
    for _ in range(max_iter):
        sims = x @ centroids.T
        new = sims.argmax(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = _cluster_sums(x, labels, len(centroids))
        empty = np.flatnonzero(np.bincount(labels, minlength=len(centroids)) == 0)
        if len(empty):
            # Re-seed empty clusters with the points worst served by their centroid.
            worst = np.argsort(sims[np.arange(len(x)), labels])[: len(empty)]
            sums[empty] = x[worst]
        centroids = l2_normalize(sums)
    sims = x @ centroids.T
    labels = sims.argmax(axis=1)
    inertia = float(np.sum(1.0 - sims[np.arange(len(x)), labels]))
    return KMeans(labels, centroids.astype(np.float32), inertia)


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100) -> KMeans:
    """Spherical k-means (cosine) on L2-normalized rows: the best of `n_init` k-means++ runs.
    Deterministic for a given seed."""
    x = np.asarray(x, dtype=np.float32)
    if not 1 <= k <= len(x):
        raise JinalocError(f"k must be between 1 and the number of inputs ({len(x)}), got {k}")
    rng = np.random.default_rng(seed)
    best: KMeans | None = None
    for _ in range(n_init):
        run = _lloyd(x, _init_plus_plus(x, k, rng), max_iter)
        if best is None or run.inertia < best.inertia - 1e-9:
            best = run
    assert best is not None
    return best


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance, exact in O(n k dim).

    The mean of (1 - x.y) over a cluster is 1 - x.S/|c| with S the cluster's vector sum,
    so no n x n distance matrix is needed. Singletons score 0, as in scikit-learn."""
    x = np.asarray(x, dtype=np.float32)
    ids, labels = np.unique(labels, return_inverse=True)
    k = len(ids)
    if k < 2 or k >= len(x):
        raise JinalocError("silhouette needs between 2 and n-1 clusters")
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    dots = (x @ _cluster_sums(x, labels, k).T).astype(np.float64)  # (n, k)
    rows = np.arange(len(x))
    own = sizes[labels]
    a = (own - dots[rows, labels]) / np.maximum(own - 1, 1)
    mean_dist = 1.0 - dots / sizes
    mean_dist[rows, labels] = np.inf
    b = mean_dist.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def estimate_k(
    x: np.ndarray, max_k: int = DEFAULT_MAX_K, seed: int = 0
) -> tuple[int, dict[int, float]]:
    """The k in 2..max_k with the best mean silhouette, and the score of each k tried.
    Measured on a seeded sample of ESTIMATE_SAMPLE rows when there are more."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) > ESTIMATE_SAMPLE:
        x = x[np.random.default_rng(seed).choice(len(x), ESTIMATE_SAMPLE, replace=False)]
    n = len(x)
    if n < 3:
        return 1, {}
    scores: dict[int, float] = {}
    for k in range(2, min(max_k, n - 1) + 1):
        labels = kmeans(x, k, seed=seed).labels
        if len(np.unique(labels)) >= 2:
            scores[k] = silhouette(x, labels)
    if not scores:  # all rows identical
        return 1, {}
    return max(scores, key=lambda k: (scores[k], -k)), scores


def cluster_vectors(
    x: np.ndarray, k: int | None = None, max_k: int = DEFAULT_MAX_K, seed: int = 0
) -> Clustering:
    """Clusters of unit rows, largest first, members ordered by closeness to the centroid."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise JinalocError("nothing to cluster")
    estimated = k is None
    if k is None:
        if max_k < 2:
            raise JinalocError(f"--max-k must be at least 2, got {max_k}")
        k, _ = estimate_k(x, max_k, seed)
    fit = kmeans(x, k, seed=seed)
    clusters = []
    for c in range(k):
        members = np.flatnonzero(fit.labels == c)
        if not len(members):
            continue  # fewer distinct inputs than k
        sims = x[members] @ fit.centroids[c]
        order = np.argsort(-sims, kind="stable")
        clusters.append(Cluster(members[order].tolist(), sims[order].astype(float).tolist()))
    clusters.sort(key=lambda c: (-len(c.members), min(c.members)))
    used = len(clusters)
    score = silhouette(x, fit.labels) if 2 <= used < len(x) else None
    return Clustering(clusters, used, estimated, score)


def cluster(
    embedder: Embeds,
    texts: Sequence[str],
    k: int | None = None,
    max_k: int = DEFAULT_MAX_K,
    seed: int = 0,
    dim: int | None = None,
    batch_size: int = 32,
) -> Clustering:
    """Clusters of `texts` (indices) embedded with the clustering adapter."""
    vectors = embedder.embed(texts, "clustering", "document", dim, batch_size)
    return cluster_vectors(vectors, k, max_k, seed)
