"""`rerank`, `classify`, `cluster`, `dedup` end to end on the tiny fixture model.

The fixture weights are random, so these check mechanics: every command's output must agree
with vectors computed directly through the Embedder API with the same adapter and prompt."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.load import load_embedder
from tests.conftest import ROOT, model_dir

# GGUF at F32 (exact) where llama.cpp is installed, else MLX (CPU is fine for tiny models).
BACKEND = "gguf" if importlib.util.find_spec("llama_cpp") else "mlx"
MODEL = ["--model", str(model_dir("nano")), "--backend", BACKEND]
if BACKEND == "gguf":
    MODEL += ["--quant", "F32"]

TEXTS = [
    "the cat sat on the mat",
    "dogs bark at night",
    "a recipe for lemon cake",
    "stock markets fell today",
    "cats purr when happy",
    "bake the cake for forty minutes",
]
runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [*map(str, args), *MODEL], input=input)


@pytest.fixture(scope="module")
def embedder():
    quant = "F32" if BACKEND == "gguf" else None
    e = load_embedder(str(model_dir("nano")), backend=BACKEND, quant=quant, offline=True)
    yield e
    e.close()


def lines(text: str) -> str:
    return "".join(t + "\n" for t in text)


# --- rerank -------------------------------------------------------------------------------


def test_rerank_orders_by_cosine_and_scores_grep_lines_on_their_text(embedder):
    q = embedder.embed(["cats"], "retrieval", "query")[0]
    d = embedder.embed(TEXTS, "retrieval", "document")
    expected = np.argsort(-(d @ q), kind="stable")
    grep = [f"notes/n{i}.md:{i + 1}:{t}" for i, t in enumerate(TEXTS)]
    r = run("rerank", "cats", "--scores", input=lines(grep))
    assert r.exit_code == 0, r.stderr
    out = [line.split("\t") for line in r.stdout.splitlines()]
    assert [o[1] for o in out] == [grep[i] for i in expected]  # prefix kept
    np.testing.assert_allclose([float(o[0]) for o in out], (d @ q)[expected], atol=1e-3)


def test_rerank_top_k_min_score_and_exit_codes(embedder):
    q = embedder.embed(["cake"], "retrieval", "query")[0]
    s = embedder.embed(TEXTS, "retrieval", "document") @ q
    r = run("rerank", "cake", "-k", "2", input=lines(TEXTS))
    assert r.stdout.splitlines() == [TEXTS[i] for i in np.argsort(-s, kind="stable")[:2]]
    cut = float(np.median(s))
    r = run("rerank", "cake", "--min-score", cut, input=lines(TEXTS))
    assert len(r.stdout.splitlines()) == int((s >= cut).sum())
    r = run("rerank", "cake", "--min-score", "1.01", input=lines(TEXTS))
    assert (r.exit_code, r.stdout) == (1, "")


def test_rerank_json_and_jsonl_input_keeps_ids():
    docs = [json.dumps({"id": f"k{i}", "text": t}) for i, t in enumerate(TEXTS)]
    r = run("rerank", "cake", "--jsonl", input=lines(docs))
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["rank"] for row in rows] == list(range(1, 7))
    assert sorted(row["id"] for row in rows) == [f"k{i}" for i in range(6)]
    assert all(TEXTS[int(row["id"][1])] == row["text"] for row in rows)
    plain = run("rerank", "cake", input=lines(docs)).stdout.splitlines()
    assert [json.loads(x)["id"] for x in plain] == [row["id"] for row in rows]
    r = run("rerank", "cake", "--json", "-k", "1", input="x.md:3:cake\n")
    (row,) = json.loads(r.stdout)
    assert {k: v for k, v in row.items() if k != "score"} == {
        "rank": 1, "path": "x.md", "line": 3, "text": "cake"
    }  # fmt: skip
    assert -1 <= row["score"] <= 1


def test_rerank_read_files_skips_unreadable_ones(tmp_path, embedder):
    paths = []
    for i, t in enumerate(TEXTS[:3]):
        p = tmp_path / f"n{i}.md"
        p.write_text(t)
        paths.append(str(p))
    (tmp_path / "bin.dat").write_bytes(b"\0\1\2")
    stdin = lines(
        [paths[0], str(tmp_path / "bin.dat"), paths[1], str(tmp_path / "gone.md"), paths[2]]
    )
    r = run("rerank", "--read-files", "cake", input=stdin)
    assert r.exit_code == 0, r.stderr
    q = embedder.embed(["cake"], "retrieval", "query")[0]
    s = embedder.embed(TEXTS[:3], "retrieval", "document") @ q
    assert r.stdout.splitlines() == [paths[i] for i in np.argsort(-s, kind="stable")]
    assert "bin.dat: binary file" in r.stderr and "gone.md: no such file" in r.stderr
    r = run("rerank", "--read-files", "cake", input=str(tmp_path / "gone.md") + "\n")
    assert r.exit_code == 2 and "none of the files could be read" in r.stderr


@pytest.mark.parametrize(
    "stdin, message",
    [
        ("", "no input: stdin is empty"),
        ("\n  \n", "no input: stdin is empty"),
        (
            '{"id": 1, "text": "a"}\n{"id": 2, "text": 3}\n',
            'stdin line 2: missing or non-string "text"',
        ),
        ('{"id": 1, "text": "a"}\n\n{"id": 2,\n', "stdin line 3: invalid JSON"),
    ],
)
def test_bad_input_is_a_one_line_error(stdin, message):
    for cmd in (["rerank", "q"], ["classify", "-l", "a", "-l", "b"], ["cluster"], ["dedup"]):
        r = run(*cmd, input=stdin)
        assert r.exit_code == 2, (cmd, r.stdout, r.stderr)
        assert message in r.stderr and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1


def test_usage_errors():
    assert "--json and --jsonl" in run("rerank", "q", "--json", "--jsonl", input="a\n").stderr
    r = run("classify", "-l", "only one", input="a\n")
    assert r.exit_code == 2 and "at least two labels" in r.stderr
    r = run("classify", "-l", "a", "-l", "b", "--only-label", "c", input="a\n")
    assert r.exit_code == 2 and "not one of the labels" in r.stderr
    r = run("cluster", "-k", "5", input="a\nb\n")
    assert r.exit_code == 2 and "more than the 2 inputs" in r.stderr
    r = run("dedup", "--threshold", "2", input="a\n")
    assert r.exit_code == 2 and "between -1 and 1" in r.stderr


# --- classify -----------------------------------------------------------------------------

LABELS = ["animals", "food", "money"]


def expected_labels(embedder, texts):
    lab = embedder.embed(LABELS, "classification", "document")
    docs = embedder.embed(texts, "classification", "document")
    sims = docs @ lab.T
    return [LABELS[i] for i in sims.argmax(axis=1)], sims.max(axis=1)


def test_classify_prints_label_score_line(embedder):
    want, score = expected_labels(embedder, TEXTS)
    r = run("classify", *[a for lab in LABELS for a in ("-l", lab)], input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    out = [line.split("\t") for line in r.stdout.splitlines()]
    assert [(o[0], o[2]) for o in out] == list(zip(want, TEXTS, strict=True))
    np.testing.assert_allclose([float(o[1]) for o in out], score, atol=1e-3)


def test_classify_only_label_counts_and_labels_file(tmp_path, embedder):
    want, _ = expected_labels(embedder, TEXTS)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(LABELS) + "\n\n")
    base = ["classify", "--labels-file", labels_file]
    for label in LABELS:
        r = run(*base, "--only-label", label, input=lines(TEXTS))
        picked = [t for t, w in zip(TEXTS, want, strict=True) if w == label]
        assert r.stdout.splitlines() == picked
        assert r.exit_code == (0 if picked else 1)
    r = run(*base, "--counts", input=lines(TEXTS))
    counts = {lab: want.count(lab) for lab in LABELS}
    assert dict(line.split("\t") for line in r.stdout.splitlines()) == {
        k: str(v) for k, v in counts.items()
    }
    assert json.loads(run(*base, "--counts", "--json", input=lines(TEXTS)).stdout) == counts


def test_classify_files_as_arguments_jsonl(tmp_path, embedder):
    files = []
    for i, t in enumerate(TEXTS):
        files.append(tmp_path / f"n{i}.txt")
        files[-1].write_text(t)
    want, _ = expected_labels(embedder, TEXTS)
    r = run("classify", "-l", "animals", "-l", "food", "-l", "money", "--jsonl", *files)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(f) for f in files]
    assert [row["label"] for row in rows] == want
    assert all(set(row["scores"]) == set(LABELS) for row in rows)
    assert all(row["score"] == max(row["scores"].values()) for row in rows)


# --- cluster ------------------------------------------------------------------------------


def test_cluster_json_is_deterministic_and_agrees_with_the_vectors(embedder):
    args = ("cluster", "-k", "2", "--json", "--seed", "7")
    r = run(*args, input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert run(*args, input=lines(TEXTS)).stdout == r.stdout
    assert doc["k"] == 2 and doc["estimated"] is False
    members = [[m["text"] for m in c["members"]] for c in doc["clusters"]]
    assert sorted(t for m in members for t in m) == sorted(TEXTS)
    assert len(members[0]) >= len(members[1])
    x = embedder.embed(TEXTS, "clustering", "document")
    for c, texts in zip(doc["clusters"], members, strict=True):
        idx = [TEXTS.index(t) for t in texts]
        centroid = x[idx].sum(axis=0)
        sims = x[idx] @ (centroid / np.linalg.norm(centroid))
        assert c["title"] == texts[0] == TEXTS[idx[int(np.argmax(sims))]]
        np.testing.assert_allclose([m["score"] for m in c["members"]], sims, atol=1e-3)


def test_cluster_estimates_k_and_prints_blocks(tmp_path):
    r = run("cluster", input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    blocks = r.stdout.strip().split("\n\n")
    assert 2 <= len(blocks) <= len(TEXTS) - 1
    for n, block in enumerate(blocks, 1):
        header, *members = block.splitlines()
        assert header.startswith(f"# {n}: ") and header.endswith(f" ({len(members)})")
    doc = json.loads(run("cluster", "--json", input=lines(TEXTS)).stdout)
    assert doc["estimated"] and doc["k"] == len(blocks)
    notes = []
    for i, t in enumerate(TEXTS):
        notes.append(tmp_path / f"n{i}.md")
        notes[-1].write_text(f"---\n\n# Note {i}\n\n{t}\n")
    r = run("cluster", "--jsonl", "-k", "3", *notes)
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 3 and all(row["title"].startswith("Note ") for row in rows)
    assert sorted(m["path"] for row in rows for m in row["members"]) == sorted(map(str, notes))


# --- dedup --------------------------------------------------------------------------------


def test_dedup_groups_identical_lines_and_exit_codes():
    r = run("dedup", "--threshold", "1", input=lines(TEXTS + [TEXTS[2], TEXTS[0]]))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split("\n\n") == [
        f"1.0000\t{TEXTS[0]}\n1.0000\t{TEXTS[0]}",
        f"1.0000\t{TEXTS[2]}\n1.0000\t{TEXTS[2]}\n",
    ]
    r = run("dedup", "--threshold", "1", input=lines(TEXTS))
    assert (r.exit_code, r.stdout) == (1, "")


def test_dedup_pairs_and_groups_agree_with_the_vectors(embedder):
    x = embedder.embed(TEXTS, "text-matching", "document")
    sims = x @ x.T
    pairs = sorted(sims[np.triu_indices(len(TEXTS), 1)])
    cut = float(pairs[-3])  # the three most similar pairs pass
    r = run("dedup", "--pairs", "--jsonl", "--threshold", cut, input=lines(TEXTS))
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        a, b = TEXTS.index(row["a"]["text"]), TEXTS.index(row["b"]["text"])
        assert row["score"] == pytest.approx(sims[a, b], abs=1e-3) and a < b
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    r = run("dedup", "--json", "--threshold", "-1", input=lines(TEXTS))
    (group,) = json.loads(r.stdout)
    assert [m["text"] for m in group["members"]] == TEXTS and group["size"] == 6


# --- the README's pipeline recipes, through a real shell ----------------------------------


def sh(script: str, cwd) -> subprocess.CompletedProcess:
    """Runs `script` with `jinaloc` standing for this interpreter's `python -m jinaloc`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jinaloc = f"{sys.executable} -m jinaloc"
    model = " ".join(MODEL)
    script = script.replace("jinaloc ", f"{jinaloc} ").replace("MODEL", model)
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def notes(tmp_path):
    (tmp_path / "notes").mkdir()
    for i, t in enumerate(TEXTS):
        (tmp_path / "notes" / f"n{i}.md").write_text(f"# Note {i}\n\nTODO: {t}\n")
    (tmp_path / "notes" / "copy.md").write_text(f"# Note 0\n\nTODO: {TEXTS[0]}\n")
    return tmp_path


def test_recipe_rerank_grep_output(notes):
    r = sh('grep -rn "TODO" notes | jinaloc rerank "baking" -k 3 MODEL', notes)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert len(out) == 3 and all(line.startswith("notes/") and ":3:TODO: " in line for line in out)


def test_recipe_rerank_files_from_find(notes):
    r = sh('find notes -name "*.md" | jinaloc rerank --read-files "cats" -k 2 MODEL', notes)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and r.stdout.startswith("notes/")


def test_recipe_classify_counts_with_sort(notes):
    r = sh(
        'grep -rh "TODO" notes | jinaloc classify -l animals -l food -l money MODEL'
        " | cut -f1 | sort | uniq -c",
        notes,
    )
    assert r.returncode == 0, r.stderr
    assert sum(int(line.split()[0]) for line in r.stdout.splitlines()) == 7


def test_recipe_cluster_json_with_jq(notes):
    r = sh("jinaloc cluster -k 2 notes/*.md --json MODEL | jq -r '.clusters[].title'", notes)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_recipe_dedup_files(notes):
    r = sh('find notes -name "*.md" | jinaloc dedup --read-files MODEL', notes)
    assert r.returncode == 0, r.stderr
    groups = [g.splitlines() for g in r.stdout.strip().split("\n\n")]
    (group,) = [g for g in groups if "1.0000\tnotes/n0.md" in g]
    assert "1.0000\tnotes/copy.md" in group


# --- the notes of an index ----------------------------------------------------------------


@pytest.fixture
def index_db(notes):
    db = notes / "notes.db"
    r = run("index", notes / "notes", "--db", db, "-q")
    assert r.exit_code == 0, r.stderr
    return db


def note_vectors(db, embedder, task):
    """Each note re-embedded directly: chunks as the index embeds them, mean, normalized."""
    from jinaloc.chunking import embed_text
    from jinaloc.index.store import Store

    with Store.open(db, create=False) as store:
        docs = list(store.iter_documents())
    out = {}
    for d in docs:
        texts = [embed_text(d.title, h, t) for h, t in zip(d.headings, d.texts, strict=True)]
        v = embedder.embed(texts, task, "document").mean(axis=0)
        out[d.path] = (v / np.linalg.norm(v), d.title, d.vectors)
    return out


def test_cluster_notes_reembeds_with_the_clustering_adapter(index_db, embedder):
    r = run("cluster", "--db", index_db, "-k", "2", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    want = note_vectors(index_db, embedder, "clustering")
    assert sorted(m["path"] for c in doc["clusters"] for m in c["members"]) == sorted(want)
    for c in doc["clusters"]:
        paths = [m["path"] for m in c["members"]]
        x = np.stack([want[p][0] for p in paths])
        centroid = x.sum(axis=0) / np.linalg.norm(x.sum(axis=0))
        np.testing.assert_allclose([m["score"] for m in c["members"]], x @ centroid, atol=1e-3)
        assert c["title"] == want[paths[0]][1]
    # The index's own retrieval vectors: no model, the same note vector as `similar`.
    r = run("cluster", "--db", index_db, "-k", "2", "--json", "--stored-vectors")
    assert r.exit_code == 0, r.stderr
    for c in json.loads(r.stdout)["clusters"]:
        paths = [m["path"] for m in c["members"]]
        x = np.stack(
            [want[p][2].mean(axis=0) / np.linalg.norm(want[p][2].mean(axis=0)) for p in paths]
        )
        centroid = x.sum(axis=0) / np.linalg.norm(x.sum(axis=0))
        np.testing.assert_allclose([m["score"] for m in c["members"]], x @ centroid, atol=1e-3)


def test_dedup_notes_with_the_text_matching_adapter(index_db, embedder, monkeypatch):
    want = note_vectors(index_db, embedder, "text-matching")
    paths = sorted(want)
    x = np.stack([want[p][0] for p in paths])
    sims = x @ x.T
    i, j = divmod(int(np.argmax(np.triu(sims, 1) - np.tril(np.ones_like(sims)))), len(paths))
    r = run(
        "dedup", "--db", index_db, "--pairs", "--jsonl", "--threshold", float(sims[i, j]) - 1e-4
    )
    assert r.exit_code == 0, r.stderr
    (row,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert {row["a"]["path"], row["b"]["path"]} == {paths[i], paths[j]}
    assert row["score"] == pytest.approx(sims[i, j], abs=1e-3)
    # --notes takes the default index (JINALOC_DB here).
    monkeypatch.setenv("JINALOC_DB", str(index_db))
    assert run("dedup", "--notes", "--pairs", "--threshold", "-1").stdout.count("\n") == 21


def test_notes_usage_errors(index_db, tmp_path):
    r = run("cluster", "--db", tmp_path / "none.db")
    assert r.exit_code == 2 and "no index at" in r.stderr
    r = run("dedup", "--db", index_db, "--read-files")
    assert r.exit_code == 2 and "give no FILES or --read-files" in r.stderr
    r = run("cluster", "--stored-vectors", input="a\n")
    assert r.exit_code == 2 and "--stored-vectors needs --notes or --db" in r.stderr


def test_recipe_cluster_indexed_notes(notes):
    r = sh(
        "jinaloc index notes --db notes.db -q MODEL && jinaloc cluster --db notes.db -k 2 MODEL",
        notes,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("# ") == 2 and r.stdout.count(".md") == 7
