"""The pipeline logic on synthetic vectors: no model needed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from index_helpers import FakeEmbedder

from jinaloc.chunking import title_of
from jinaloc.errors import JinalocError
from jinaloc.pipelines import classify, cluster, dedup, items, rerank
from jinaloc.vectors import l2_normalize


def blobs(centers: int, per: int, dim: int = 32, spread: float = 0.05, seed: int = 0):
    """Unit vectors around `centers` random directions, and the true labels."""
    rng = np.random.default_rng(seed)
    means = l2_normalize(rng.normal(size=(centers, dim)))
    labels = np.repeat(np.arange(centers), per)
    x = means[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))  # interleave so no test relies on input order
    return l2_normalize(x[order]), labels[order]


def same_partition(a, b) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --- cluster ------------------------------------------------------------------------------


def test_kmeans_recovers_blobs_deterministically():
    x, truth = blobs(3, 20)
    fit = cluster.kmeans(x, 3, seed=1)
    assert same_partition(fit.labels, truth)
    np.testing.assert_allclose(np.linalg.norm(fit.centroids, axis=1), 1, atol=1e-5)
    again = cluster.kmeans(x, 3, seed=1)
    assert np.array_equal(fit.labels, again.labels)
    assert fit.inertia == again.inertia


def test_kmeans_rejects_bad_k():
    x, _ = blobs(2, 3)
    for k in (0, 7):
        with pytest.raises(JinalocError, match="k must be between 1 and"):
            cluster.kmeans(x, k)


def test_silhouette_matches_brute_force():
    rng = np.random.default_rng(3)
    x = l2_normalize(rng.normal(size=(40, 8)))
    labels = rng.integers(0, 4, size=40)
    labels[0] = 9  # a singleton scores 0
    dist = 1 - x @ x.T
    expected = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            expected.append(0.0)
            continue
        a = dist[i, own & (np.arange(len(x)) != i)].mean()
        b = min(dist[i, labels == c].mean() for c in set(labels.tolist()) - {labels[i]})
        expected.append((b - a) / max(a, b))
    assert cluster.silhouette(x, labels) == pytest.approx(np.mean(expected), abs=1e-5)


@pytest.mark.parametrize("centers", [2, 3, 5])
def test_estimate_k_finds_the_blobs(centers):
    x, _ = blobs(centers, 12, seed=centers)
    k, scores = cluster.estimate_k(x, max_k=8)
    assert k == centers
    assert set(scores) == set(range(2, 9))


def test_estimate_k_on_a_sample_of_large_inputs(monkeypatch):
    monkeypatch.setattr(cluster, "ESTIMATE_SAMPLE", 40)
    x, _ = blobs(4, 30, seed=9)
    k, scores = cluster.estimate_k(x, max_k=8)
    assert k == 4 and max(scores) == 8


def test_cluster_vectors_orders_clusters_and_members():
    x, truth = blobs(3, 10)
    x = np.concatenate([x, x[truth == 0][:5]])  # cluster 0 becomes the largest
    result = cluster.cluster_vectors(x, seed=0)
    assert result.estimated and result.k == 3
    assert [len(c.members) for c in result.clusters] == [15, 10, 10]
    assert 0 < result.silhouette <= 1
    for c in result.clusters:
        assert c.scores == sorted(c.scores, reverse=True)
        centroid = l2_normalize(x[c.members].sum(axis=0))
        sims = x[c.members] @ centroid
        assert c.representative == c.members[int(np.argmax(sims))]
    assert sorted(i for c in result.clusters for i in c.members) == list(range(len(x)))


def test_cluster_vectors_given_k_and_degenerate_inputs():
    x, _ = blobs(3, 10)
    given = cluster.cluster_vectors(x, k=2)
    assert not given.estimated and given.k == 2
    one = cluster.cluster_vectors(x[:1])
    assert one.k == 1 and one.silhouette is None and one.clusters[0].members == [0]
    same = np.repeat(x[:1], 6, axis=0)  # fewer distinct rows than k: empty clusters dropped
    assert cluster.cluster_vectors(same, k=3).k == 1
    assert cluster.cluster_vectors(same).k == 1
    with pytest.raises(JinalocError, match="nothing to cluster"):
        cluster.cluster_vectors(np.zeros((0, 4), np.float32))


# --- dedup --------------------------------------------------------------------------------


def test_similar_pairs_blockwise_equals_brute_force():
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.normal(size=(50, 4)))
    sims = x @ x.T
    expected = {(i, j) for i in range(50) for j in range(i + 1, 50) if sims[i, j] >= 0.8}
    got = list(dedup.similar_pairs(x, 0.8, block=7))
    assert {(i, j) for i, j, _ in got} == expected
    assert all(s == pytest.approx(sims[i, j], abs=1e-6) for i, j, s in got)


def test_groups_are_connected_components():
    # 0~1 and 1~2 above the threshold, 0~2 below: one group through 1. 3 stands alone.
    angles = np.radians([0, 15, 30])
    x = np.array([[np.cos(a), np.sin(a), 0] for a in angles] + [[0, 0, 1]], np.float32)
    sims = x @ x.T
    assert sims[0, 2] < 0.95 < min(sims[0, 1], sims[1, 2])
    (group,) = dedup.duplicate_groups(x, 0.95, block=2)
    assert group.members == [0, 1, 2]
    assert group.scores[1] == pytest.approx(max(sims[1, 0], sims[1, 2]))
    assert dedup.duplicate_groups(x, 0.9999) == []


def test_identical_texts_are_embedded_once_and_expand_back():
    distinct = dedup.Distinct()
    assert distinct.add(["a", "b", "a"]) == ["a", "b"]
    assert distinct.add(["c", "b"]) == ["c"]
    assert distinct.copies == [[0, 2], [1, 4], [3]]
    # rows: a, b, c with b ~ c.
    x = l2_normalize(np.array([[1, 0], [0, 1], [0.1, 1]], np.float32))
    groups = dedup.duplicate_groups(x, 0.9, distinct.copies)
    assert [g.members for g in groups] == [[0, 2], [1, 3, 4]]
    assert groups[0].scores == [1.0, 1.0]
    assert groups[1].scores[0] == 1.0 and groups[1].scores[1] == pytest.approx(0.995, abs=1e-3)
    pairs = dedup.duplicate_pairs(x, 0.9, distinct.copies)
    assert [(a, b) for a, b, _ in pairs] == [(0, 2), (1, 4), (1, 3), (3, 4)]


def test_threshold_is_a_cosine():
    with pytest.raises(JinalocError, match="between -1 and 1"):
        dedup.duplicate_groups(np.eye(2, dtype=np.float32), 1.5)


# --- rerank -------------------------------------------------------------------------------


def test_topk_keeps_the_best_in_bounded_memory():
    top = rerank.TopK(k=3)
    top.push(np.array([0.1, 0.9, 0.5]), ["a", "b", "c"])
    top.push(np.array([0.7, 0.2, 0.5]), ["d", "e", "f"])
    assert len(top) == 3
    assert top.results() == [(0.9, "b"), (0.7, "d"), (0.5, "c")]  # tie: earlier input first


def test_topk_all_and_min_score():
    top = rerank.TopK(min_score=0.5)
    top.push(np.array([0.5, 0.4, 0.6, 0.6]), ["a", "b", "c", "d"])
    assert top.results() == [(0.6, "c"), (0.6, "d"), (0.5, "a")]
    empty = rerank.TopK(k=2, min_score=0.99)
    empty.push(np.array([0.1]), ["a"])
    assert empty.results() == []


# --- classify -----------------------------------------------------------------------------


def test_check_labels():
    assert classify.check_labels([" bug ", "", "feature"]) == ["bug", "feature"]
    with pytest.raises(JinalocError, match="at least two"):
        classify.check_labels(["bug"])
    with pytest.raises(JinalocError, match="given twice"):
        classify.check_labels(["bug", "bug"])
    with pytest.raises(JinalocError, match="tabs"):
        classify.check_labels(["a\tb", "c"])


def test_best_labels():
    best, score = classify.best_labels(np.array([[0.1, 0.3], [0.5, -1.0]]))
    assert best.tolist() == [1, 0] and score.tolist() == [0.3, 0.5]


# --- the adapters and prompts each task asks for ------------------------------------------


def test_each_task_uses_its_adapter_and_prompt():
    fake = FakeEmbedder()
    texts = ["alpha", "beta", "gamma", "alpha"]
    ranked = rerank.rerank(fake, "greek letters", texts, k=2)
    assert fake.calls[0] == ("retrieval", "query", ["greek letters"])
    assert fake.calls[1] == ("retrieval", "document", texts)
    q = fake.embed(["greek letters"], "retrieval", "query")
    docs = fake.embed(texts, "retrieval", "document")
    expected = np.argsort(-(docs @ q[0]), kind="stable")[:2].tolist()
    assert [i for i, _ in ranked] == expected

    fake.calls.clear()
    labels = classify.classify(fake, texts, ["vowel first", "consonant first"])
    assert [c[:2] for c in fake.calls] == [("classification", "document")] * 2
    assert labels[0] == labels[3]

    fake.calls.clear()
    result = cluster.cluster(fake, texts, k=2)
    assert fake.calls[0][:2] == ("clustering", "document")
    assert sum(len(c.members) for c in result.clusters) == 4

    fake.calls.clear()
    distinct = dedup.Distinct()
    vectors = fake.embed(distinct.add(texts), "text-matching", "document")  # as `jinaloc dedup`
    groups = dedup.duplicate_groups(vectors, 0.99, distinct.copies)
    assert fake.calls == [("text-matching", "document", ["alpha", "beta", "gamma"])]
    assert [g.members for g in groups] == [[0, 3]]


# --- items --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("src/a.py:12:    raise ValueError", ("src/a.py", 12, "    raise ValueError")),
        ("my notes/x.md:3:a: b:4:c", ("my notes/x.md", 3, "a: b:4:c")),
        ("a.md:7:", ("a.md", 7, "")),
        ("just text", None),
        ("Note: 10:30 meeting", None),
        (" x:1:y", None),
        ("a.md:x1:y", None),
    ],
)
def test_split_grep_prefix(line, expected):
    assert items.split_grep_prefix(line) == expected


def test_line_items_plain_grep_and_json():
    plain = list(items.line_items(["a.md:3:hello", "", "plain"]))
    assert [(i.text, i.out, i.path, i.line) for i in plain] == [
        ("hello", "a.md:3:hello", "a.md", 3),
        ("plain", "plain", None, None),
    ]
    assert plain[0].describe() == {"path": "a.md", "line": 3, "text": "hello"}
    raw = list(items.line_items(["a.md:3:hello"], grep_prefix=False))
    assert raw[0].text == "a.md:3:hello" and raw[0].path is None
    (rec,) = items.line_items(['{"id": 7, "text": "x:1:y"}'])
    assert (rec.id, rec.text, rec.out) == (7, "x:1:y", '{"id": 7, "text": "x:1:y"}')
    assert rec.describe() == {"id": 7, "text": "x:1:y"}
    with pytest.raises(JinalocError, match="stdin line 2: invalid JSON"):
        list(items.line_items(['{"id": 1, "text": "a"}', "{oops"]))


def test_file_titles_follow_the_index_rule():
    # One title rule for pipes and the index (chunking.title_of).
    assert title_of("\n# Big *title* #\n\ntext", "x.md") == "Big *title*"
    assert title_of("\n  first line\n## later", "x.md") == "x"
    assert title_of("---\ntitle: Front\n---\n# Other", "x.md") == "Front"
    assert title_of("\n\n", "dir/x.txt") == "x"
    assert title_of("print(1)", "dir/x.py") == "x.py"


def test_embed_blocks_reads_files_lazily_and_skips_bad_ones(caplog):
    def read(path: Path) -> str:
        if path.name == "bad":
            raise JinalocError(f"{path}: binary file")
        return f"# {path.name}\ncontent"

    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.zeros((len(texts), 2), np.float32)

    stream = items.path_items(["a", "bad", "", "b", "c"])
    with caplog.at_level(logging.WARNING, logger="jinaloc"):
        blocks = list(items.embed_blocks(stream, embed, read, block=2))
    assert [[i.path for i in b] for b, _ in blocks] == [["a"], ["b", "c"]]
    assert seen == [["# a\ncontent"], ["# b\ncontent", "# c\ncontent"]]
    assert all(i.text is None and i.title == i.path for b, _ in blocks for i in b)
    assert "skipped bad: binary file" in caplog.text


def test_nonempty_fails_before_any_work():
    with pytest.raises(JinalocError, match="no input: stdin is empty"):
        items.nonempty(iter([]))
    assert [i.out for i in items.nonempty(items.line_items(["x"]))] == ["x"]


def test_note_blocks_pool_chunk_vectors_per_note():
    from jinaloc.chunking import embed_text
    from jinaloc.index.store import IndexedDocument

    def doc(i, n):
        vectors = l2_normalize(np.random.default_rng(i).normal(size=(n, 4)))
        return IndexedDocument(i, f"/n{i}.md", f"Note {i}", [f"c{j}" for j in range(n)],
                               [["Note", f"h{j}"] for j in range(n)], vectors)  # fmt: skip

    docs = [doc(0, 2), doc(1, 0), doc(2, 3), doc(3, 1)]
    stored = list(items.note_blocks(docs, None, block=2))
    assert [[i.path for i in b] for b, _ in stored] == [["/n0.md", "/n2.md"], ["/n3.md"]]
    got = np.concatenate([v for _, v in stored])
    want = l2_normalize(np.stack([docs[i].vectors.mean(axis=0) for i in (0, 2, 3)]))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert stored[0][0][0].title == "Note 0" and stored[0][0][0].describe() == {"path": "/n0.md"}

    seen = []

    def embed(texts):
        seen.extend(texts)
        return l2_normalize(np.ones((len(texts), 4), np.float32))

    (block, vectors), *_ = items.note_blocks(docs[:1], embed)
    # As the index embeds chunks: title and heading path first.
    assert seen == [embed_text("Note 0", ["Note", f"h{j}"], f"c{j}") for j in range(2)]
    np.testing.assert_allclose(vectors, l2_normalize(np.ones((1, 4))), atol=1e-6)
