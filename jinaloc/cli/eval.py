"""`jinaloc eval`: what dims, bits and modes cost in recall on this index."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..errors import IndexEmpty, JinalocError
from ..output import write_json
from .common import (
    ApiJobsOpt,
    ApiKindOpt,
    ApiModelOpt,
    ApiUrlOpt,
    BackendOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    QuantOpt,
    QuietOpt,
    RerankerOpt,
    ThreadsOpt,
    err_console,
    load_reranker,
    out_console,
)
from .core import app
from .index import DbOpt, TopKOpt, _open_index

if TYPE_CHECKING:
    from rich.table import Table

    from ..index import Recommendation, Result

EXAMPLES = """
[b]Examples[/b]

  jinaloc eval                                 [dim]# queries made from 200 sampled notes[/]
  jinaloc eval --db notes.db --plot eval.png   [dim]# and the chart, recall against bytes[/]
  jinaloc eval --queries mine.jsonl -k 5       [dim]# your own queries and answers[/]
  jinaloc eval --json | jq '.rows[] | select(.family == "bits")'
"""
# Columns for the recall of each query kind from this terminal width on.
WIDE = 90


@app.command("eval", epilog=EXAMPLES)
def eval_command(
    db: DbOpt = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            "--queries",
            help='Queries with known answers: JSON lines {"query", "relevant": [paths]}'
            " or query<TAB>path lines (default: made from the index's notes).",
        ),
    ] = None,
    k: TopKOpt = 10,
    sample: Annotated[
        int, typer.Option("--sample", help="Notes to make queries from.", min=1)
    ] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the note sample.")] = 0,
    json_out: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write recall against bytes per chunk as a PNG."),
    ] = None,
    rerank: Annotated[
        bool,
        typer.Option("--rerank", help="Also measure hybrid + the cross-encoder reranker (slow)."),
    ] = False,
    reranker: RerankerOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure what smaller dims, int8, sign bits and each search mode cost in recall.

    Known-item queries (yours, or made from sampled notes) are scored over every chunk
    for each Matryoshka dim and vector type, and searched in each mode. Prints one row per
    configuration and the smallest one within 1 point of full-dim float recall."""
    if plot is not None:
        from ..plot import require_matplotlib

        require_matplotlib()
    with _open_index(db, model, backend, quant, offline) as idx:
        if not idx.counts()["chunks"]:
            raise IndexEmpty(idx.path)
        asked = idx.eval_queries(queries, sample, seed)
        if queries is None and not asked:
            raise JinalocError(
                "no queries could be made from this index (no note has a heading of its"
                " own or two chunks)",
                "pass --queries FILE",
            )
        cross = load_reranker(reranker, None, offline, backend=backend) if rerank else None
        score = (lambda query, texts: cross.score(query, texts)) if cross else None
        try:
            with _ProgressBar(quiet) as progress:
                result = idx.evaluate(asked, k, rerank=score, progress=progress)
        finally:
            if cross is not None:
                cross.close()
    if plot is not None:
        from ..plot import plot_recall

        plot_recall(result, plot)
    advice = _advice(result.recommendation, result, db)
    if json_out:
        write_json({**result.to_json(), "advice": advice, "plot": str(plot) if plot else None})
        return
    out_console.print(_table(result, out_console.width))
    for line in advice:
        out_console.print(escape(line), highlight=False, soft_wrap=True)
    if plot is not None and not quiet:
        err_console.print(f"wrote {escape(str(plot))}", highlight=False)


class _ProgressBar:
    """A stderr progress bar fed by evaluate's (stage, done, total) callback."""

    def __init__(self, quiet: bool):
        self.bar = None
        if not quiet and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err_console,
                transient=True,
            )
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.bar is None:
            return None
        self.bar.start()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _table(result: "Result", width: int) -> "Table":
    from rich import box
    from rich.table import Table

    # Recall per query kind, when there are several and the terminal has room (else --json).
    kinds = list(result.kinds) if len(result.kinds) > 1 and width >= WIDE else []
    k = result.k
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"jinaloc eval: {result.model}, dim {result.dim}, {result.files:,} files,"
        f" {result.chunks:,} chunks",
        caption=f"{result.queries} queries ("
        + ", ".join(f"{n} {kind}" for kind, n in result.kinds.items())
        + f"), embedded in {result.embed_ms_per_query:.1f} ms each. bytes per chunk;"
        f" R@{k}: recall@{k}{' (also per query kind)' if kinds else ''}; MRR@{k}; nDCG@10;"
        f" overlap: top {k}"
        f" shared with float32@{result.dim}; ms/q: search calls for modes, eval's own numpy"
        " scan for vector rows (not what that layout costs in search).",
        caption_justify="left",
    )
    table.add_column("config", no_wrap=True)
    for name in ("bytes", f"R@{k}", "MRR", "nDCG", "overlap"):
        table.add_column(name, justify="right", min_width=5)
    if kinds:
        for kind in kinds:
            table.add_column(kind, justify="right", min_width=5)
    table.add_column("ms/q", justify="right", min_width=4)
    family = None
    for row in result.rows:
        c = row.config
        if family is not None and c.family != family:
            table.add_section()
        family = c.family
        cells = [
            c.name,
            _bytes(c.bytes_per_chunk),
            f"{row.recall:.3f}",
            f"{row.mrr:.3f}",
            f"{row.ndcg:.3f}",
            f"{row.overlap:.3f}",
        ]
        if kinds:
            cells += [f"{row.by_kind[kind]['recall']:.3f}" for kind in kinds]
        table.add_row(*cells, f"{row.ms_per_query:.2f}")
    return table


def _advice(rec: "Recommendation", result: "Result", db: Path | None) -> list[str]:
    """The recommendation as lines with the commands that act on it."""
    from ..defaults import DEFAULT_OVERSAMPLE
    from ..index import COARSE_MIN_DIM, TOLERANCE

    on = f" --db {db}" if db else ""
    ref = rec.reference
    points = round(TOLERANCE * 100)
    lines = [
        f"reference: {ref.config.name}, recall@{result.k} {ref.recall:.3f};"
        f" 'within {points} point' means recall@{result.k} >= {ref.recall - TOLERANCE:.3f}"
    ]

    def build(row) -> str:
        d = row.config.dim
        if d == result.dim:
            return f"keep this index (dim {d}): nothing smaller that jinaloc builds is as good"
        how = f"`jinaloc index --dim {d}{on}` (in place: no model, nothing re-embedded)"
        if d >= COARSE_MIN_DIM:
            how += " (searched by bits then float rescoring; `--exact` gives this ranking)"
        return f"{row.config.name} ({_bytes(row.config.bytes_per_chunk)} B/chunk): {how}"

    s = rec.storage
    if s is not None and s.config.family == "float":
        lines.append(f"smallest within {points} point: {build(s)}")
    elif s is not None:
        lines.append(
            f"smallest within {points} point: {s.config.name}"
            f" ({_bytes(s.config.bytes_per_chunk)} B/chunk, recall {s.recall:.3f}), which"
            " jinaloc does not store on its own yet"
        )
        if rec.buildable is not None:
            lines.append(f"smallest jinaloc builds: {build(rec.buildable)}")
    if result.dim < COARSE_MIN_DIM:
        lines.append(
            f"search: this index (dim {result.dim} < {COARSE_MIN_DIM}) is scanned exactly;"
            " --oversample does not apply"
        )
    elif rec.oversample is not None:
        m = rec.oversample.config.oversample
        lines.append(
            f"search: oversample {m} is the smallest measured within {points} point"
            f" (default {DEFAULT_OVERSAMPLE}): `jinaloc search --oversample {m}{on} ...`"
        )
    else:
        lines.append(
            f"search: no measured oversample is within {points} point: `jinaloc search --exact`"
        )
    if rec.mode is not None:
        mode = rec.mode.config.name
        if mode == "hybrid":
            lines.append(f"mode: hybrid (the default) has the best recall@{result.k} here")
        elif mode in ("semantic", "lexical"):
            lines.append(
                f"mode: {mode} has the best recall@{result.k} here:"
                f" `jinaloc search --mode {mode}{on} ...`"
            )
        else:
            lines.append(f"mode: {mode} has the best recall@{result.k} here")
    return lines
