"""Retrieval quality of `jinaloc search` on public labeled sets, beside standard BM25 baselines
in the same run (docs/quality.md).

Each document is written as one Markdown file, indexed with `jinaloc index` (any model: the
lexical side does not depend on it) and searched per file through `Index.search`; nDCG@10
and recall@100 by ranx. Baselines on the same documents and queries: bm25s without and with
a Snowball stemmer, SQLite FTS5 (porter, one row per document, OR of the query words), and
for Chinese jieba + bm25s.

    pip install -e '.[bench]'
    # the raw sets (see docs/quality.md for where they come from)
    python scripts/bench_quality.py prepare --scifact DIR --cranfield DIR --cmrc FILE --out DATA
    python scripts/bench_quality.py run --data DATA --model /path/to/tiny-v5-nano \\
        [--before /path/to/other/checkout] [--modes lexical hybrid] [--json PATH] [--md PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, call_in_tree, log, machine, table, write_json  # noqa: E402

K = 100
# Published BM25 nDCG@10 (Anserini, BEIR paper, flat index) where one exists.
PUBLISHED = {"scifact": 0.679}
CJK_SETS = {"cmrc2018"}


# --- preparing the sets: raw files -> DATA/<set>/{docs/*.md, queries.jsonl, qrels.tsv}


def _write_set(out: Path, docs: dict, queries: dict, qrels: dict) -> None:
    (out / "docs").mkdir(parents=True, exist_ok=True)
    for doc_id, (title, text) in docs.items():
        (out / "docs" / f"{doc_id}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(out / "qrels.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in qrels.items():
            for doc_id, gain in rels.items():
                f.write(f"{qid}\t{doc_id}\t{gain}\n")
    log(f"{out.name}: {len(docs)} docs, {len(queries)} queries")


def prepare_scifact(src: Path, out: Path) -> None:
    """SciFact as BEIR's test split: the dev claims, each relevant to its cited abstracts.
    `src` holds corpus_train.csv and claims_validation.csv (the original release as CSV)."""
    csv.field_size_limit(1 << 30)
    docs = {}
    with open(src / "corpus_train.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            # The abstract is a printed array of quoted sentences.
            sentences = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", row["abstract"])
            text = " ".join((a or b).replace("\\'", "'").strip() for a, b in sentences)
            docs[row["doc_id"]] = (row["title"], text)
    queries, qrels = {}, {}
    with open(src / "claims_validation.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            queries[row["id"]] = row["claim"]
            for doc_id in re.findall(r"\d+", row["cited_doc_ids"]):
                qrels.setdefault(row["id"], {})[doc_id] = 1
    _write_set(out, docs, queries, qrels)


def _sections(text: str) -> list[dict]:
    """Records of a Cranfield-style file: `.I n` then `.X` fields."""
    records, field = [], None
    for line in text.splitlines():
        if line.startswith(".I "):
            records.append({"I": line[3:].strip()})
            field = None
        elif re.fullmatch(r"\.[A-Z]", line.strip()):
            field = line.strip()[1]
            records[-1][field] = ""
        elif field:
            records[-1][field] += line + "\n"
    return records


def prepare_cranfield(src: Path, out: Path) -> None:
    """Cranfield 1400: aeronautics abstracts, 225 queries. Relevance codes 1 (a complete
    answer) to 4 (of minimum interest) become gains 4..1; -1 and 5 are not relevant. The
    qrels number the queries 1..225 in file order."""
    docs = {
        r["I"]: (" ".join(r.get("T", "").split()), " ".join(r.get("W", "").split()))
        for r in _sections((src / "cran.all.1400").read_text(encoding="latin-1"))
    }
    queries = {
        str(n): " ".join(r["W"].split())
        for n, r in enumerate(_sections((src / "cran.qry").read_text(encoding="latin-1")), 1)
    }
    qrels: dict[str, dict[str, int]] = {}
    for line in (src / "cranqrel").read_text().splitlines():
        qid, doc_id, code = line.split()[:3]
        if 1 <= int(code) <= 4:
            qrels.setdefault(qid, {})[doc_id] = 5 - int(code)
    _write_set(out, docs, {q: t for q, t in queries.items() if q in qrels}, qrels)


def prepare_cmrc(src: Path, out: Path) -> None:
    """CMRC 2018 dev (SQuAD-style): each paragraph a document, each question relevant to
    the paragraph it was asked about."""
    data = json.loads(src.read_text(encoding="utf-8"))["data"]
    docs, queries, qrels, ids = {}, {}, {}, {}
    for article in data:
        for para in article["paragraphs"]:
            context = para["context"].strip()
            doc_id = ids.setdefault(context, f"p{len(ids)}")
            docs[doc_id] = (article.get("title") or doc_id, context)
            for qa in para["qas"]:
                queries[qa["id"]] = qa["question"]
                qrels[qa["id"]] = {doc_id: 1}
    _write_set(out, docs, queries, qrels)


# --- loading a prepared set


def load(set_dir: Path) -> tuple[dict, dict, dict]:
    docs = {}
    for path in sorted((set_dir / "docs").glob("*.md")):
        docs[path.stem] = path.read_text(encoding="utf-8")
    queries = {}
    with open(set_dir / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(set_dir / "qrels.tsv") as f:
        next(f)
        for line in f:
            qid, doc_id, gain = line.split("\t")
            qrels.setdefault(qid, {})[doc_id] = int(gain)
    return docs, {q: t for q, t in queries.items() if q in qrels}, qrels


# --- jinaloc: index the Markdown files with the CLI, search through Index.search


def jinaloc_run(set_dir: str, db: str, model: str, modes: list[str], k: int) -> dict:
    """{mode: {query id: {doc id: score}}} and the index/search times, for the jinaloc
    imported here (call_in_tree runs this against another checkout)."""
    from jinaloc.index import Index

    _, queries, _ = load(Path(set_dir))
    if not Path(db).exists():
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "jinaloc",
                "index",
                str(Path(set_dir) / "docs"),
                "--db",
                db,
                "--model",
                model,
                "-q",
            ],
            check=True,
            env={
                **os.environ,
                "PYTHONPATH": os.path.dirname(os.path.dirname(__import__("jinaloc").__file__)),
            },
        )
        log(f"indexed {set_dir} in {time.perf_counter() - start:.0f} s")
    out: dict = {"runs": {}, "seconds": {}}
    needs_model = any(m != "lexical" for m in modes)
    with Index.open_built(Path(db), model if needs_model else None) as idx:
        for mode in modes:
            run = {}
            start = time.perf_counter()
            for qid, text in queries.items():
                hits = idx.search(text, k, mode=mode)
                run[qid] = {Path(h.path).stem: float(len(hits) - n) for n, h in enumerate(hits)}
            out["seconds"][mode] = time.perf_counter() - start
            out["runs"][mode] = run
    return out


# --- baselines


def bm25s_run(docs: dict, queries: dict, k: int, stem: bool, cjk: bool) -> dict:
    import bm25s

    ids = list(docs)
    if cjk:
        import jieba

        jieba.setLogLevel(60)

        def tok(texts):
            return [[w for w in jieba.lcut(t) if w.strip() and re.search(r"\w", w)] for t in texts]

        retriever = bm25s.BM25()
        retriever.index(tok(docs.values()), show_progress=False)
        results = {}
        for qid, tokens in zip(queries, tok(queries.values()), strict=True):
            tokens = [t for t in tokens if t in retriever.vocab_dict] or ["\0"]
            if tokens == ["\0"]:
                results[qid] = {}
                continue
            got, scores = retriever.retrieve([tokens], k=min(k, len(ids)), show_progress=False)
            results[qid] = {ids[d]: float(s) for d, s in zip(got[0], scores[0], strict=True)}
        return results
    stemmer = None
    if stem:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    corpus = bm25s.tokenize(
        list(docs.values()), stopwords="en", stemmer=stemmer, show_progress=False
    )
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    results = {}
    vocab = set(corpus.vocab)
    for qid, text in queries.items():
        q = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        # Query words the corpus never holds are dropped (bm25s cannot score them).
        inv = {i: w for w, i in q.vocab.items()}
        words = [inv[i] for i in q.ids[0] if inv[i] in vocab]
        if not words:
            results[qid] = {}
            continue
        got, scores = retriever.retrieve([words], k=min(k, len(ids)), show_progress=False)
        results[qid] = {ids[d]: float(s) for d, s in zip(got[0], scores[0], strict=True)}
    return results


def fts5_porter_run(docs: dict, queries: dict, k: int) -> dict:
    """One FTS5 row per document, porter stemming, the query's words OR-ed, bm25 order."""
    try:
        import pysqlite3 as sq
    except ImportError:
        sq = sqlite3
    conn = sq.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE d USING fts5(id UNINDEXED, body,"
        " tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.executemany("INSERT INTO d VALUES (?, ?)", docs.items())
    results = {}
    for qid, text in queries.items():
        words = re.findall(r"\w+", text)
        if not words:
            results[qid] = {}
            continue
        match = " OR ".join(f'"{w}"' for w in words)
        rows = conn.execute(
            "SELECT id, -bm25(d) s FROM d WHERE d MATCH ? ORDER BY s DESC LIMIT ?", (match, k)
        )
        results[qid] = {i: float(s) for i, s in rows}
    return results


def evaluate(qrels: dict, run: dict) -> dict:
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    # ranx wants every query in the run: an empty one scores 0.
    run = {q: (run.get(q) or {"\0none": 0.0}) for q in qrels}
    scores = ranx_evaluate(Qrels(qrels), Run(run), ["ndcg@10", "recall@100"])
    return {
        "ndcg@10": round(float(scores["ndcg@10"]), 4),
        "recall@100": round(float(scores["recall@100"]), 4),
    }


def run_set(name: str, set_dir: Path, work: Path, args) -> list[dict]:
    docs, queries, qrels = load(set_dir)
    if args.max_queries:
        queries = dict(list(queries.items())[: args.max_queries])
        qrels = {q: qrels[q] for q in queries}
    rows = []

    def add(system: str, run: dict, seconds: float) -> None:
        row = {
            "set": name,
            "docs": len(docs),
            "queries": len(queries),
            "system": system,
            **evaluate(qrels, run),
            "ms_per_query": round(1000 * seconds / len(queries), 2),
        }
        log(row)
        rows.append(row)

    trees = [("jinaloc", ROOT)] + ([("jinaloc before", Path(args.before))] if args.before else [])
    for label, tree in trees:
        db = work / f"{name}-{'before' if tree != ROOT else 'after'}.db"
        fn = (
            jinaloc_run
            if tree == ROOT
            else lambda *a, tree=tree: call_in_tree(tree, "bench_quality", "jinaloc_run", *a)
        )
        got = fn(str(set_dir), str(db), args.model, args.modes, K)
        for mode in args.modes:
            add(f"{label} {mode}", got["runs"][mode], got["seconds"][mode])
    cjk = name in CJK_SETS
    if cjk:
        start = time.perf_counter()
        add("jieba + bm25s", bm25s_run(docs, queries, K, False, True), time.perf_counter() - start)
    else:
        for stem in (False, True):
            start = time.perf_counter()
            run = bm25s_run(docs, queries, K, stem, False)
            add(f"bm25s{' + stemmer' if stem else ''}", run, time.perf_counter() - start)
    start = time.perf_counter()
    add("SQLite FTS5 porter", fts5_porter_run(docs, queries, K), time.perf_counter() - start)
    if name in PUBLISHED:
        rows.append(
            {"set": name, "system": "Anserini BM25 (published)", "ndcg@10": PUBLISHED[name]}
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write the sets as Markdown files + queries + qrels")
    prep.add_argument("--scifact", type=Path, help="folder with corpus_train.csv, claims_*.csv")
    prep.add_argument(
        "--cranfield", type=Path, help="folder with cran.all.1400, cran.qry, cranqrel"
    )
    prep.add_argument("--cmrc", type=Path, help="cmrc2018_dev.json (SQuAD-style)")
    prep.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("run", help="index, search and score every prepared set")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--model", required=True, help="model to index with (lexical ignores it)")
    run.add_argument("--sets", nargs="*", help="which prepared sets (default: all)")
    run.add_argument("--modes", nargs="*", default=["lexical"])
    run.add_argument("--before", help="another jinaloc checkout to measure beside this one")
    run.add_argument("--work", type=Path, help="where the index files go (kept for reruns)")
    run.add_argument("--max-queries", type=int, help="only the first N queries of each set")
    run.add_argument("--json", type=Path)
    run.add_argument("--md", type=Path)
    args = p.parse_args()
    if args.command == "prepare":
        for fn, src, name in (
            (prepare_scifact, args.scifact, "scifact"),
            (prepare_cranfield, args.cranfield, "cranfield"),
            (prepare_cmrc, args.cmrc, "cmrc2018"),
        ):
            if src:
                fn(src, args.out / name)
        return
    work = args.work or args.data / "indexes"
    work.mkdir(parents=True, exist_ok=True)
    names = args.sets or sorted(d.name for d in args.data.iterdir() if (d / "qrels.tsv").is_file())
    rows = [r for name in names for r in run_set(name, args.data / name, work, args)]
    md = table(rows, ["set", "docs", "queries", "system", "ndcg@10", "recall@100", "ms_per_query"])
    print(md)
    if args.md:
        args.md.write_text(md + "\n")
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
