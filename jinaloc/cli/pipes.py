"""Shell pipeline commands: `rerank`, `classify`, `cluster`, `dedup`.

stdin (lines, grep -n output, JSON lines, or file paths) streams through the model in blocks;
stdout carries only results; exit codes follow grep: 0 results, 1 none passed the filter,
2 errors."""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..defaults import DEFAULT_MAX_K, DEFAULT_THRESHOLD, DOC_TOKENS
from ..errors import JinalocError, check_choice
from ..output import Renderer, output_format
from . import common
from .common import (
    ApiJobsOpt,
    ApiKindOpt,
    ApiModelOpt,
    ApiUrlOpt,
    BackendOpt,
    BatchOpt,
    InputOpt,
    InstructionOpt,
    JsonlOpt,
    JsonOpt,
    ModelOpt,
    NoServerOpt,
    NullInputOpt,
    OfflineOpt,
    QuantOpt,
    QuietOpt,
    RerankerOpt,
    ThreadsOpt,
    embed_progress,
    iter_stdin,
    load_embedder,
    load_reranker,
)
from .core import app

if TYPE_CHECKING:  # the pipelines (numpy) load when a command runs, not for --help
    import numpy as np

    from ..pipelines.items import Item

ReadFilesOpt = Annotated[
    bool,
    typer.Option(
        "--read-files", help="stdin lines are file paths: use each file's contents (from find)."
    ),
]
NoPrefixOpt = Annotated[
    bool,
    typer.Option(
        "--no-prefix", help="Embed whole lines: do not split off a grep path:line: prefix."
    ),
]
FilesArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Files to read; else stdin lines (or paths with --read-files).", show_default=False
    ),
]

INPUT_HELP = """
[b]Input[/b]: one text per stdin line. Lines from [cyan]grep -n[/] ([cyan]path:line:text[/]) are
embedded on their text and printed back whole; [cyan]--no-prefix[/] embeds the whole line. JSON
lines ([cyan]{"id": ..., "text": ...}[/]) keep their id. With [cyan]--read-files[/] (or FILES),
whole files are embedded (truncated to the model's context); unreadable or binary files are
skipped with a warning.
"""


def _inputs(
    files: list[Path] | None, read_files: bool, input_format: str, no_prefix: bool
) -> "tuple[Iterator[Item], int | None]":
    """The items to embed and their count when known up front (for the progress bar)."""
    from ..inputs import INPUT_FORMATS
    from ..pipelines.items import line_items, nonempty, path_items

    check_choice("--input", input_format, INPUT_FORMATS)
    if files:
        if read_files:
            raise JinalocError("give FILES or --read-files, not both")
        return path_items(files), len(files)
    lines = common.iter_stdin_null() if common.settings().null_input else iter_stdin()
    if read_files:
        return nonempty(path_items(lines)), None
    return nonempty(line_items(lines, input_format, grep_prefix=not no_prefix)), None


def _no_readable(count: int) -> None:
    if count == 0:
        raise JinalocError("no input: none of the files could be read")


def _nothing_passed() -> None:
    """grep's exit code 1: the input was fine, nothing passed the filter."""
    raise typer.Exit(1)


# --- rerank -------------------------------------------------------------------------------

RERANK_EXAMPLES = (
    """
[b]Examples[/b]

  grep -rn "retry" src/ | jinaloc rerank "error handling" -k 5
  find notes -name "*.md" | jinaloc rerank --read-files "trip to Japan" -k 3
  find notes -name "*.md" -print0 | jinaloc rerank --read-files -0 "trip to Japan" -k 3
  cat titles.txt | jinaloc rerank "gpu memory" --min-score 0.3 --scores
  jq -c '{id: .url, text: .title}' items.jsonl | jinaloc rerank "pricing" --jsonl
  grep -rl "tax" notes/ | jinaloc rerank --cross --read-files "2024 tax deadline" -k 5
"""
    + f"""
[b]--cross[/b] scores each line with a cross-encoder (Qwen3-Reranker, [cyan]--reranker[/] NAME,
a .gguf file or a folder of its safetensors) that reads query and line together: slower than
embeddings, usually better ordered; the score is its P("yes"), each line cut to its first
{DOC_TOKENS} tokens ([cyan]--doc-tokens[/]). It runs on ONNX Runtime where that is the
default backend ([cyan]--quant[/] int8 or fp32), else on llama.cpp ([cyan]--backend[/] gguf).
On a CPU it costs about 1 s per short line: keep the input small.
"""
    + INPUT_HELP
)


@app.command(epilog=RERANK_EXAMPLES)
def rerank(
    query: Annotated[str, typer.Argument(help="What the lines should be about.")],
    top: Annotated[
        int | None, typer.Option("-k", "--top-k", help="Keep the best K lines only.", min=1)
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score", help="Drop lines scoring below this (cosine; --cross: P(yes))."
        ),
    ] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Prefix lines with score<TAB>.")] = False,
    read_files: ReadFilesOpt = False,
    null: NullInputOpt = False,
    no_prefix: NoPrefixOpt = False,
    input_format: InputOpt = "auto",
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    no_server: NoServerOpt = False,
    batch_size: BatchOpt = 32,
    quiet: QuietOpt = False,
    cross: Annotated[
        bool, typer.Option("--cross", help="Score with a cross-encoder instead of embeddings.")
    ] = False,
    reranker: RerankerOpt = None,
    instruction: InstructionOpt = None,
    doc_tokens: Annotated[
        int,
        typer.Option("--doc-tokens", help="With --cross: cut each line to N tokens.", min=1),
    ] = DOC_TOKENS,
) -> None:
    """Order stdin lines (or files) by relevance to QUERY, most relevant first.

    Retrieval adapter: the query takes the "Query: " prompt, the lines "Document: ".
    --cross: a Qwen3-Reranker reads query and line together. Exit code 1 when nothing
    reaches --min-score."""
    from ..pipelines.items import embed_blocks
    from ..pipelines.rerank import TopK, query_scorer
    from ..reader import read_input

    fmt = output_format(as_json, as_jsonl)
    if not cross and (reranker or instruction or doc_tokens != DOC_TOKENS):
        raise JinalocError("--reranker, --instruction and --doc-tokens need --cross")
    if cross and model:
        raise JinalocError("--model chooses an embedding model: with --cross use --reranker")
    if cross and backend not in ("auto", "onnx", "gguf"):
        raise JinalocError(f"no {backend} reranker: with --cross choose --backend onnx or gguf")
    items, total = _inputs(None, read_files, input_format, no_prefix)
    if cross:
        cross_encoder = load_reranker(reranker, quant, offline, doc_tokens, backend)

        def score(texts, progress):
            return cross_encoder.score(query, texts, instruction, progress)
    else:
        scorer = query_scorer(
            load_embedder(model, backend, quant, offline), query, batch_size=batch_size
        )

        def score(texts, progress):
            return scorer.scores(texts, progress)[:, 0]

    best = TopK(top, min_score)
    count = 0
    with embed_progress(total, "reranking", quiet) as progress:
        for block, sims in embed_blocks(items, lambda texts: score(texts, progress), read_input):
            best.push(sims, block)
            count += len(block)
    _no_readable(count)
    out = Renderer(
        fmt,
        data=lambda r: {"rank": r[0], "score": round(r[1], 6), **r[2].describe()},
        line=lambda r: f"{r[1]:.4f}\t{r[2].out}" if scores else r[2].out,
    )
    out.add((n, s, item) for n, (s, item) in enumerate(best.results(), 1))
    if not out.close():
        _nothing_passed()


# --- classify -----------------------------------------------------------------------------

CLASSIFY_EXAMPLES = (
    """
[b]Examples[/b]

  cat issues.txt | jinaloc classify -l "a bug report" -l "a feature request" -l "a question"
  cat issues.txt | jinaloc classify --labels-file labels.txt --only-label "a bug report"
  jinaloc classify -l recipe -l "travel notes" -l "work meeting" notes/*.md --counts
  git log --format=%s | jinaloc classify -l fix -l feature -l docs --jsonl | jq .label

[b]Labels[/b] are embedded as written with the classification adapter and the "Document: "
prompt, like the texts; each text gets the closest label. Short descriptions ("a bug report")
separate better than single words. Output: [cyan]label<TAB>score<TAB>line[/], in input order.
"""
    + INPUT_HELP
)


def _read_labels(labels: list[str] | None, labels_file: Path | None) -> list[str]:
    from ..pipelines import classify as classify_
    from ..reader import read_input

    given = list(labels or [])
    if labels_file is not None:
        given += read_input(labels_file).splitlines()
    return classify_.check_labels(given)


@app.command(epilog=CLASSIFY_EXAMPLES)
def classify(
    files: FilesArg = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="A class label (repeatable).")
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option("--labels-file", help="Labels, one per line.")
    ] = None,
    only_label: Annotated[
        str | None,
        typer.Option("--only-label", help="Print only the lines given this label (like grep)."),
    ] = None,
    counts: Annotated[
        bool, typer.Option("--counts", help="Print label<TAB>count for each label instead.")
    ] = False,
    read_files: ReadFilesOpt = False,
    null: NullInputOpt = False,
    no_prefix: NoPrefixOpt = False,
    input_format: InputOpt = "auto",
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    no_server: NoServerOpt = False,
    batch_size: BatchOpt = 32,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot classification of stdin lines or files into the given labels.

    Exit code 1 when --only-label matches nothing."""
    from ..pipelines import classify as classify_
    from ..pipelines.items import embed_blocks
    from ..reader import read_input

    fmt = output_format(as_json, as_jsonl)
    labels = _read_labels(label, labels_file)
    if only_label is not None and only_label not in labels:
        raise JinalocError(f"--only-label {only_label!r} is not one of the labels")
    if only_label is not None and counts:
        raise JinalocError("--only-label and --counts don't mix: choose one")
    items, total = _inputs(files, read_files, input_format, no_prefix)
    embedder = load_embedder(model, backend, quant, offline, task="classification")
    scorer = classify_.label_scorer(embedder, labels, batch_size=batch_size)
    tally = dict.fromkeys(labels, 0)
    out = Renderer(
        "text" if counts else fmt,
        data=lambda r: _classified(r[0], r[1], r[2], labels, r[3]),
        line=lambda r: r[0].out if only_label is not None else f"{r[1]}\t{r[2]:.4f}\t{r[0].out}",
    )
    count = 0
    with embed_progress(total, "classifying", quiet) as progress:
        for block, sims in embed_blocks(
            items, lambda texts: scorer.scores(texts, progress), read_input
        ):
            count += len(block)
            best, score = classify_.best_labels(sims)
            chosen = [(labels[b], float(s)) for b, s in zip(best, score, strict=True)]
            for name, _ in chosen:
                tally[name] += 1
            if not counts:
                out.add(
                    (item, name, s, row)
                    for item, (name, s), row in zip(block, chosen, sims, strict=True)
                    if only_label is None or name == only_label
                )
    _no_readable(count)
    printed = out.close()
    if counts:
        summary = Renderer(
            fmt,
            data=lambda r: {"label": r[0], "count": r[1]},
            line=lambda r: f"{r[0]}\t{r[1]}",
            document=lambda rows: {r["label"]: r["count"] for r in rows},
        )
        summary.add(sorted(tally.items(), key=lambda kv: -kv[1]))  # stable: ties in label order
        summary.close()
    elif only_label is not None and printed == 0:
        _nothing_passed()


def _classified(
    item: "Item", name: str, score: float, labels: list[str], row: "np.ndarray"
) -> dict:
    return {
        "label": name,
        "score": round(score, 6),
        "scores": {lab: round(float(s), 6) for lab, s in zip(labels, row, strict=True)},
        **item.describe(),
    }


# --- cluster and dedup: every vector at once, from stdin, files or an index's notes ------

NotesOpt = Annotated[
    bool,
    typer.Option(
        "--notes", help="Use the notes of the index (--db, else JINALOC_DB or the default)."
    ),
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Use the notes of this index file (implies --notes).")
]
StoredOpt = Annotated[
    bool,
    typer.Option(
        "--stored-vectors",
        help="With --notes: the index's own (retrieval) vectors, no model; fast, less apt.",
    ),
]

NOTES_HELP = """
[b]Notes[/b] ([cyan]--notes[/] or [cyan]--db FILE[/]): the files of an index built by
[cyan]jinaloc index[/], one item per note (path and title). Each chunk is re-embedded with this
command's adapter (the index stores retrieval vectors), title and heading path first as the
index does, and a note's vector is the normalized mean of its chunks' vectors, as for
[cyan]jinaloc similar[/]. The model is the index's unless [cyan]--model[/] says otherwise.
[cyan]--stored-vectors[/] skips the model and uses the stored retrieval vectors.
"""


class _Vectors:
    """Where cluster and dedup get their items from, checked before any model loads."""

    def __init__(self, files, read_files, input_format, no_prefix, notes, db, stored):
        self.index = None
        self.from_index = notes or db is not None
        self.db = db
        if self.from_index:
            if files or read_files:
                raise JinalocError("--notes/--db read the index: give no FILES or --read-files")
        elif stored:
            raise JinalocError("--stored-vectors needs --notes or --db")
        else:
            self.items, self.total = _inputs(files, read_files, input_format, no_prefix)
        self.stored = stored

    def load(self, model, backend, quant, offline, task):
        """The embedder, or None with --stored-vectors; the index's model by default."""
        if self.from_index:
            from ..index import Index

            self.index = Index.open_built(
                self.db, model, backend, quant, offline, loader=load_embedder
            )
            return None if self.stored else self.index.load(task)
        return load_embedder(model, backend, quant, offline, task=task)

    def collect(self, embed, quiet: bool) -> "tuple[list[Item], np.ndarray]":
        """Every item and its vector; `embed(texts, progress)` embeds a block of texts."""
        import numpy as np

        from ..pipelines.items import embed_blocks, note_blocks
        from ..reader import read_input

        kept: list[Item] = []
        vectors: list[np.ndarray] = []
        if self.index is not None:
            chunks = self.index.counts()["chunks"]
            with (
                self.index,
                embed_progress(chunks, "embedding notes", quiet or self.stored) as progress,
            ):
                fn = None if self.stored else (lambda texts: embed(texts, progress))
                for block, vecs in note_blocks(self.index.documents(), fn):
                    kept.extend(block)
                    vectors.append(vecs)
            if not kept:
                raise JinalocError(f"no input: the index {self.index.path} has no notes")
        else:
            with embed_progress(self.total, "embedding", quiet) as progress:
                for block, vecs in embed_blocks(
                    self.items, lambda texts: embed(texts, progress), read_input
                ):
                    kept.extend(block)
                    vectors.append(vecs)
            _no_readable(len(kept))
        return kept, np.concatenate(vectors)


CLUSTER_EXAMPLES = (
    """
[b]Examples[/b]

  cat titles.txt | jinaloc cluster                 [dim](k estimated)[/]
  jinaloc cluster -k 5 notes/*.md --json | jq '.clusters[] | .title'
  find notes -name "*.md" | jinaloc cluster --read-files --max-k 12
  jinaloc cluster --notes -k 8                     [dim](the notes of your index)[/]

Clustering adapter ("Document: " prompt), spherical k-means (cosine) with k-means++ seeding,
deterministic for a given [cyan]--seed[/]. Without [cyan]-k[/], k is the one in 2..--max-k with
the best mean silhouette (on a sample of 2000 inputs when there are more). Each cluster prints
as a [cyan]# N: title (size)[/] header, then its members closest to the centroid first; the
title is that of the closest member (a file's first heading or line). Clusters are separated
by a blank line, largest first.
"""
    + INPUT_HELP
    + NOTES_HELP
)


@app.command(epilog=CLUSTER_EXAMPLES)
def cluster(
    files: FilesArg = None,
    k: Annotated[
        int | None, typer.Option("-k", "--clusters", help="Number of clusters (else estimated).")
    ] = None,
    max_k: Annotated[
        int, typer.Option("--max-k", help="Largest k tried when estimating.", min=2)
    ] = DEFAULT_MAX_K,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")] = 0,
    read_files: ReadFilesOpt = False,
    null: NullInputOpt = False,
    notes: NotesOpt = False,
    db: DbOpt = None,
    stored_vectors: StoredOpt = False,
    no_prefix: NoPrefixOpt = False,
    input_format: InputOpt = "auto",
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    no_server: NoServerOpt = False,
    batch_size: BatchOpt = 32,
    quiet: QuietOpt = False,
) -> None:
    """Group stdin lines, files or indexed notes into clusters of similar meaning."""
    from ..pipelines import cluster as cluster_

    fmt = output_format(as_json, as_jsonl)
    if k is not None and k < 1:
        raise JinalocError(f"-k must be at least 1, got {k}")
    source = _Vectors(files, read_files, input_format, no_prefix, notes, db, stored_vectors)
    embedder = source.load(model, backend, quant, offline, "clustering")

    def embed(texts, progress):
        return embedder.embed(texts, "clustering", "document", None, batch_size, progress)

    kept, vectors = source.collect(embed, quiet)
    if k is not None and k > len(kept):
        raise JinalocError(f"-k {k} is more than the {len(kept)} inputs")
    result = cluster_.cluster_vectors(vectors, k, max_k, seed)

    def data(row) -> dict:
        n, c = row
        return {
            "cluster": n,
            "size": len(c.members),
            "title": kept[c.representative].title,
            "members": [
                {**kept[i].describe(), "score": round(s, 6)}
                for i, s in zip(c.members, c.scores, strict=True)
            ],
        }

    def line(row) -> str:
        n, c = row
        head = f"# {n}: {kept[c.representative].title} ({len(c.members)})"
        return "\n".join([head, *(kept[i].out for i in c.members)])

    silhouette = None if result.silhouette is None else round(result.silhouette, 6)
    out = Renderer(
        fmt,
        data=data,
        line=line,
        separator="",
        document=lambda rows: {
            "k": result.k,
            "estimated": result.estimated,
            "silhouette": silhouette,
            "clusters": rows,
        },
    )
    out.add(enumerate(result.clusters, 1))
    out.close()


DEDUP_EXAMPLES = (
    f"""
[b]Examples[/b]

  sort -u titles.txt | jinaloc dedup
  jinaloc dedup --threshold 0.95 --pairs notes/*.md
  find notes -name "*.md" | jinaloc dedup --read-files --jsonl | jq -c '[.members[].path]'
  jinaloc dedup --db notes.db --pairs              [dim](indexed notes)[/]

Text-matching adapter ("Document: " prompt). Two texts are near-duplicates when their cosine is
at least [cyan]--threshold[/] (default {DEFAULT_THRESHOLD}: high on purpose, as merging
distinct texts costs more than missing a loose paraphrase); groups are the connected components
of that relation. Identical texts are embedded once and score 1. Output: groups of
[cyan]score<TAB>line[/] separated by blank lines (score: best similarity to another member), or
with [cyan]--pairs[/] [cyan]score<TAB>line<TAB>line[/], most similar first. Exit code 1 when
nothing is duplicated.
"""
    + INPUT_HELP
    + NOTES_HELP
)


@app.command(epilog=DEDUP_EXAMPLES)
def dedup(
    files: FilesArg = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Cosine at which texts count as duplicates.")
    ] = DEFAULT_THRESHOLD,
    pairs: Annotated[bool, typer.Option("--pairs", help="Print pairs instead of groups.")] = False,
    read_files: ReadFilesOpt = False,
    null: NullInputOpt = False,
    notes: NotesOpt = False,
    db: DbOpt = None,
    stored_vectors: StoredOpt = False,
    no_prefix: NoPrefixOpt = False,
    input_format: InputOpt = "auto",
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    no_server: NoServerOpt = False,
    batch_size: BatchOpt = 32,
    quiet: QuietOpt = False,
) -> None:
    """Find near-duplicate stdin lines, files or indexed notes."""
    from ..pipelines import dedup as dedup_

    fmt = output_format(as_json, as_jsonl)
    dedup_.check_threshold(threshold)
    source = _Vectors(files, read_files, input_format, no_prefix, notes, db, stored_vectors)
    embedder = source.load(model, backend, quant, offline, "text-matching")
    # Notes are whole documents made of chunks: no exact-copy shortcut for them.
    distinct = None if source.from_index else dedup_.Distinct()

    def embed(texts, progress):
        if distinct is not None:
            texts = distinct.add(texts)
        return embedder.embed(texts, "text-matching", "document", None, batch_size, progress)

    kept, vectors = source.collect(embed, quiet)
    copies = distinct.copies if distinct is not None else None
    if pairs:
        out = Renderer(
            fmt,
            data=lambda r: {
                "score": round(r[2], 6),
                "a": kept[r[0]].describe(),
                "b": kept[r[1]].describe(),
            },
            line=lambda r: f"{r[2]:.4f}\t{kept[r[0]].out}\t{kept[r[1]].out}",
        )
        out.add(dedup_.duplicate_pairs(vectors, threshold, copies))
    else:

        def members(g):
            return zip(g.members, g.scores, strict=True)

        out = Renderer(
            fmt,
            data=lambda r: {
                "group": r[0],
                "size": len(r[1].members),
                "members": [{**kept[i].describe(), "score": round(s, 6)} for i, s in members(r[1])],
            },
            line=lambda r: "\n".join(f"{s:.4f}\t{kept[i].out}" for i, s in members(r[1])),
            separator="",
        )
        out.add(enumerate(dedup_.duplicate_groups(vectors, threshold, copies), 1))
    if not out.close():
        _nothing_passed()
