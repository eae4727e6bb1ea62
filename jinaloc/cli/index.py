"""`jinaloc index`, `search`, `status` and `similar`: a notes folder in one SQLite file."""

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..defaults import DEFAULT_OVERSAMPLE
from ..errors import JinalocError, SchemaTooNew
from ..output import Renderer, output_format, shown, write_json
from .common import (
    ApiJobsOpt,
    ApiKindOpt,
    ApiModelOpt,
    ApiUrlOpt,
    BackendOpt,
    InstructionOpt,
    JsonlOpt,
    JsonOpt,
    ModelOpt,
    NoServerOpt,
    OfflineOpt,
    QuantOpt,
    QuietOpt,
    RerankerOpt,
    ThreadsOpt,
    embed_progress,
    err_console,
    load_embedder,
    load_reranker,
    out_console,
)
from .core import app

if TYPE_CHECKING:  # the index and what it imports (numpy, sqlite) load when a command runs
    from ..index import Index, Report

DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="Index file (default: JINALOC_DB, else the XDG data dir)."),
]
FilesOpt = Annotated[bool, typer.Option("--files", "-l", help="Matching paths only, one a line.")]
NullOpt = Annotated[
    bool, typer.Option("--null", "-0", help="With --files: end each path with NUL (xargs -0).")
]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="How many results.", min=1)]
PathGlobOpt = Annotated[
    str | None,
    typer.Option(
        "--path",
        help="Only files matching this glob (gitignore style, on the path in its indexed"
        " folder, with or without the folder's name: 'work/*.md', 'notes/work/*.md').",
    ),
]
MinScoreOpt = Annotated[
    float | None, typer.Option("--min-score", help="Drop results below this cosine similarity.")
]
AllChunksOpt = Annotated[
    bool, typer.Option("--all-chunks", help="Every matching chunk, not the best one per file.")
]
ExactOpt = Annotated[
    bool, typer.Option("--exact", help="Score every chunk exactly (slower; no coarse stage).")
]
ModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="hybrid (meaning and words, fused), semantic (meaning) or lexical (words; no model).",
    ),
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag", help="Only notes with this tag (repeatable: all of them; a matches a/b too)."
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only notes dated on or after: 2024-03-01, 2024-03, 7d, 2w, 3m, 1y."
    ),
]
BeforeOpt = Annotated[
    str | None, typer.Option("--before", help="Only notes dated before this date (as --since).")
]
FollowOutsideOpt = Annotated[
    bool,
    typer.Option(
        "--follow-outside",
        help="Index files reached by symlinks that lead outside the folder (default: skipped).",
    ),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain", help="Show each hit's rank and score in each list.")
]
# Shown at most, per list, in the human summary of a run (all of them are in --json).
SUMMARY_LIST = 20
SNIPPET_CHARS = 160

INDEX_EXAMPLES = """
[b]Examples[/b]

  jinaloc index ~/notes                [dim]# embeds everything[/]
  jinaloc index ~/notes                [dim]# again: only what changed[/]
  jinaloc index                        [dim]# every folder already indexed[/]
  jinaloc index ~/notes ~/docs --exclude 'drafts/'
  jinaloc index ~/src --code                [dim]# source code too[/]
  jinaloc index ~/notes --db notes.db --model v5-small --dim 256
  jinaloc index --dim 256               [dim]# re-dim in place: no model, no re-embedding[/]
  jinaloc index --reindex --model v5-small   [dim]# another model[/]
  jinaloc index ~/notes --backend api --api-url http://gpu:8000/v1   [dim]# a server embeds[/]
  jinaloc index ~/notes --json | jq .skipped_files
"""

SEARCH_EXAMPLES = """
[b]Examples[/b]

  jinaloc search "how do I rotate the api keys"
  jinaloc search ERR_CONN_RESET --mode lexical     [dim]# exact words only, no model[/]
  jinaloc search "数据" --explain                   [dim]# why each note ranked where it did[/]
  jinaloc search "sourdough starter" -k 5 --path 'cooking/*'
  jinaloc search "standup" --tag work --since 2w  [dim]# front matter date, else mtime[/]
  echo "meeting notes about the budget" | jinaloc search
  jinaloc search "todo list" --files | xargs -I{} grep -Hn TODO {}
  jinaloc search "travel" --files -0 | xargs -0 ls -l
  jinaloc search "taxes" --jsonl | jq -r 'select(.score > 0.5) | .path'
"""


def _db_path(db: Path | None) -> Path:
    from ..paths import default_db  # platformdirs: not for --help

    return (db or default_db()).expanduser()


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise _Interrupted


def _summary(report: "Report", db: Path) -> None:
    r = report
    head = "interrupted" if r.interrupted else "indexed"
    reread = f" ({r.reread} re-read for tags and dates)" if r.reread else ""
    err_console.print(
        f"{head}: {r.added} added, {r.updated} updated, {r.unchanged} unchanged{reread},"
        f" {r.removed} removed, {len(r.renamed)} renamed, {len(r.skipped)} skipped"
        + (f" ({len(r.known_skips)} as before)" if r.known_skips else "")
        + f" · {r.chunks_embedded} chunks embedded ({r.chunks_reused} reused),"
        f" {r.tokens:,} tokens in {r.seconds:.1f} s → {escape(shown(str(db)))}",
        highlight=False,
        soft_wrap=True,
    )
    if r.redim:
        d = r.redim
        err_console.print(
            f"  re-dimmed: {d['from']} → {d['to']} dims from the kept vectors, no model,"
            f" in {d['seconds']:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
    if r.added + r.updated + r.unchanged + len(r.renamed) == 0 and not r.interrupted:
        err_console.print(
            "[yellow]warning:[/] no notes found to index"
            + (f" ({len(r.skipped)} files skipped, listed below)" if r.skipped else "")
            + ": jinaloc indexes text files; see `jinaloc index --help`",
            soft_wrap=True,
        )
    if r.truncated:
        files = len({p for p, _ in r.truncated})
        err_console.print(
            f"  truncated: {len(r.truncated)} chunks in {files} files were cut to the model's"
            f" {r.token_limit} tokens (longest {max(n for _, n in r.truncated):,}; see --json)",
            highlight=False,
            soft_wrap=True,
        )
    crowding = r.crowding()
    if crowding:
        share = sum(n for _, n in crowding) / sum(r.file_chunks.values())
        err_console.print(
            f"  crowding: {len(crowding)} of {len(r.file_chunks)} files hold {share:.0%} of the"
            " chunks written; if they are tables or link lists, list them in .jinalocignore"
            " (gitignore syntax, in the folder) to keep them out of results:",
            highlight=False,
            soft_wrap=True,
        )
        for path, n in crowding[:SUMMARY_LIST]:
            err_console.print(f"    {escape(path)}: {n} chunks", highlight=False, soft_wrap=True)
    if r.left_out:
        kinds = ", ".join(f"{n} {kind}" for kind, n in list(r.left_out.items())[:SUMMARY_LIST])
        more = " …" if len(r.left_out) > SUMMARY_LIST else ""
        err_console.print(
            f"  left out by type: {escape(kinds)}{more}"
            " (--code for source code, --include to choose files)",
            highlight=False,
            soft_wrap=True,
        )
    for label, items in (
        ("renamed", [f"{a} → {b}" for a, b in r.renamed]),
        # Files skipped in an earlier run and unchanged are counted, not listed again.
        ("skipped", [f"{p}: {why}" for p, why in r.skipped if p not in r.known_skips]),
    ):
        for line in items[:SUMMARY_LIST]:
            err_console.print(f"  {label} {escape(shown(line))}", highlight=False, soft_wrap=True)
        if len(items) > SUMMARY_LIST:
            err_console.print(f"  … and {len(items) - SUMMARY_LIST} more {label} (see --json)")


@app.command(epilog=INDEX_EXAMPLES)
def index(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders or files to index; none: this index's folders again."),
    ] = None,
    db: DbOpt = None,
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
    dim: Annotated[
        int | None,
        typer.Option(
            "--dim",
            help="Matryoshka dim (a new index: default 512). On an existing index, re-dims it"
            " in place from the vectors it keeps: no model, nothing re-embedded.",
        ),
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Leave out matches (repeatable).")
    ] = None,
    code: Annotated[
        bool, typer.Option("--code", help="Source code too, besides notes and documents.")
    ] = False,
    follow_outside: FollowOutsideOpt = False,
    max_file_size: Annotated[
        str | None,
        typer.Option("--max-file-size", help="Skip bigger files (default 1M; e.g. 500K, 2M)."),
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option("--chunk-tokens", help="Token budget per chunk of a new index (512).", min=8),
    ] = None,
    reindex: Annotated[
        bool,
        typer.Option(
            "--reindex",
            help="Rebuild it from scratch (to change model or chunking): built beside the old"
            " one, which searches keep using until the new one replaces it.",
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="When another run is updating the index: wait, or stop."
        ),
    ] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Index folders of notes into one SQLite file.

    New and changed files are embedded, renamed ones moved, deleted ones removed.
    Ctrl-C is safe: the next run resumes where this one stopped."""
    from ..index import Index, Report, claim_new, remove_if_unused
    from ..walk import WalkOptions, check_root, parse_size
    from .progress import IndexBar

    db_path = _db_path(db)
    if not paths and (include or exclude or max_file_size or code or follow_outside):
        raise JinalocError(
            "--include, --exclude, --code, --follow-outside and --max-file-size go with the"
            " PATHs they apply to"
        )
    options = WalkOptions(
        list(include or []),
        list(exclude or []),
        types="code" if code else "notes",
        follow_outside=follow_outside,
    )
    if max_file_size:
        options.max_size = parse_size(max_file_size)
    progress = IndexBar(err_console) if not quiet and err_console.is_terminal else None

    def load(*args, **kw):
        if progress:
            progress.note(f"loading {args[0] or 'default model'}")
        embedder = load_embedder(*args, **kw, spinner=False)
        if progress:
            progress.note("indexing")
        return embedder

    for p in paths or []:  # before the index file is created
        check_root(p)
    claimed = claim_new(db_path)  # this run's own new file, if it made one
    try:
        with Index.open(db_path, create=True, loader=load) as idx:
            roots = [(p, options) for p in paths or []]
            if not roots:
                roots = idx.saved_roots()
                for root in idx.roots():
                    if not Path(root).exists():
                        n = idx.files_under(root)
                        err_console.print(
                            f"[yellow]warning:[/] {escape(shown(root))} is gone ({n} files indexed"
                            f" from it, hidden from results): `jinaloc forget"
                            f" {escape(shown(root))}` drops"
                            " them, or bring it back",
                            soft_wrap=True,
                        )
            if not roots:
                raise JinalocError("nothing to index: pass a folder (e.g. `jinaloc index ~/notes`)")
            if not reindex:  # a rebuild replaces everything, damaged or not
                idx.verify()  # a damaged file is reported, never updated on top of
            # The model (and on the same backend its quant) stays the index's own unless asked.
            idx.use_model(model, backend, quant, offline)
            if not reindex:
                idx.check(model=model)
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            code = 0
            report = Report()
            try:
                if progress:
                    progress.bar.start()
                run = idx.rebuild if reindex else idx.update
                run(
                    roots,
                    dim=dim,
                    chunk_tokens=chunk_tokens,
                    progress=progress,
                    report=report,
                    wait=wait,
                )
            except KeyboardInterrupt as e:
                report.interrupted = True
                code = 143 if isinstance(e, _Interrupted) else 130
            finally:
                signal.signal(signal.SIGTERM, previous)
                if progress:
                    progress.bar.stop()
        if json_out:
            write_json({**report.to_json(), "db": str(db_path)})
        if not quiet:
            _summary(report, db_path)
        if code:
            again = (
                "the index is as it was; run the same command again to rebuild it"
                if reindex
                else f"{report.added + report.updated} files written;"
                " run the same command again to resume"
            )
            err_console.print(f"[red]interrupted:[/] {again}", highlight=False)
            raise typer.Exit(code)
        if report.failed:
            path, why = report.failed[0]
            err_console.print(
                f"[red]error:[/] {len(report.failed)} files not indexed ({escape(why)});"
                f" {report.added + report.updated} files written: run the same command again"
                " to embed the rest",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)

    except JinalocError:
        if claimed:  # a first run that failed leaves nothing behind, unless another run uses it
            remove_if_unused(db_path, claimed)
        raise


def _read_query(query: str | None) -> str:
    if query is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise JinalocError("no query: pass one as an argument or pipe it on stdin")
        try:
            query = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise JinalocError("stdin is not valid UTF-8") from None
    query = query.strip()
    if not query:
        raise JinalocError("the query is empty")
    return query


def _snippet(row: dict) -> str:
    """The chunk on one line, without its heading lines (the heading is shown apart)."""
    from ..chunking import is_heading

    lines = [x for x in row["text"].splitlines() if not is_heading(x, row["path"])]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _where(row: dict) -> str:
    """`#page=N` in a paged document (PDF), else `:line`."""
    return f"#page={row['page']}" if row.get("page") else f":{row['start_line']}"


def _hit_line(row: dict) -> str:
    path, heading, snippet = shown(row["path"]), shown(row["heading"]), shown(_snippet(row))
    return f"{path}{_where(row)}\t{row['score']:.4f}\t{heading}\t{snippet}"


def _hit_tty(row: dict) -> None:
    out_console.print(
        f"[magenta]{escape(shown(row['path']))}[/][green]{escape(_where(row))}[/]"
        f"  [cyan]{row['score']:.3f}[/]  [bold]{escape(shown(row['heading'] or row['title']))}[/]",
        highlight=False,
        soft_wrap=True,
    )
    out_console.print(f"    {escape(shown(_snippet(row)))}", highlight=False, style="dim")


def _explain_line(row: dict) -> str:
    """`semantic #2 0.734 · lexical #1 7.21 → hybrid 0.0325` (`→ rerank #1 0.91`)."""
    e = row["explain"]
    parts = []
    for name in ("semantic", "lexical"):
        part = e[name]
        if part is None:
            parts.append(f"{name} -")
        else:
            rank = f"#{part['rank']}" if part["rank"] else "(not in list)"
            parts.append(f"{name} {rank} {part['score']:.4f}")
    line = " · ".join(parts) + f" → {e['mode']} {e['score']:.4f}"
    if "rerank" in e:
        first = e["first_stage"]
        line = (
            " · ".join(parts)
            + f" → {e['mode']} #{first['rank']} {first['score']:.4f}"
            + f" → rerank #{e['rerank']['rank']} {e['rerank']['score']:.4f}"
        )
    return line


def _print_hits(rows: list[dict], fmt: str, explain: bool = False, null: bool = False) -> None:
    """Results (`Hit.to_json(explain)` rows) on stdout in the chosen form; exit code 1 when
    there are none (like grep)."""

    def tty(row: dict) -> None:
        _hit_tty(row)
        if explain:
            out_console.print(f"    {escape(_explain_line(row))}", style="cyan")

    def line(row: dict) -> str:
        return _hit_line(row) + (f"\t{_explain_line(row)}" if explain else "")

    out = Renderer(
        fmt,
        line=line,
        tty=tty,
        path=lambda row: row["path"],
        terminal=out_console.is_terminal,
        null=null,
    )
    out.add(rows)
    if not out.close():
        raise typer.Exit(1)


def _open_index(db: Path | None, model, backend, quant, offline) -> "Index":
    """A built index with the model to search it chosen (its own unless asked otherwise)."""
    from ..index import Index

    return Index.open_built(_db_path(db), model, backend, quant, offline, loader=load_embedder)


@app.command(epilog=SEARCH_EXAMPLES)
def search(
    query: Annotated[
        str | None, typer.Argument(help="What to look for; read from stdin when left out.")
    ] = None,
    db: DbOpt = None,
    k: TopKOpt = 10,
    path: PathGlobOpt = None,
    min_score: MinScoreOpt = None,
    json_out: JsonOpt = False,
    jsonl: JsonlOpt = False,
    files: FilesOpt = False,
    null: NullOpt = False,
    all_chunks: AllChunksOpt = False,
    tag: TagOpt = None,
    since: SinceOpt = None,
    before: BeforeOpt = None,
    mode: ModeOpt = "hybrid",
    explain: ExplainOpt = False,
    exact: ExactOpt = False,
    oversample: Annotated[
        int, typer.Option("--oversample", help="Coarse candidates per result.", min=1)
    ] = DEFAULT_OVERSAMPLE,
    rerank: Annotated[
        bool,
        typer.Option("--rerank", help="Reorder the best candidates with a cross-encoder (slow)."),
    ] = False,
    rerank_top: Annotated[
        int | None,
        typer.Option("--rerank-top", help="Candidate chunks to rerank (default: -k).", min=1),
    ] = None,
    reranker: RerankerOpt = None,
    instruction: InstructionOpt = None,
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
) -> None:
    """Search the index (query as argument or on stdin).

    Hybrid by default: the notes nearest in meaning and those holding the query's words,
    fused by reciprocal rank. Shows path:line, score, heading and a snippet of the best
    chunk per file. Exit code 1 when nothing matches."""
    from ..notes import date_arg

    fmt = output_format(json_out, jsonl, files)
    text = _read_query(query)
    if not rerank and (reranker or instruction):
        raise JinalocError("--reranker and --instruction go with --rerank")
    try:  # checked before a model loads
        since, before = (date_arg(d) if d else None for d in (since, before))
    except ValueError as e:
        raise JinalocError(str(e)) from None
    options = dict(
        mode=mode,
        exact=exact,
        oversample=oversample,
        path_glob=path,
        min_score=min_score,
        all_chunks=all_chunks,
        tags=tag or [],
        since=since,
        before=before,
    )
    rows = (
        None if rerank else _search_on_server(db, text, k, options, model, backend, quant, explain)
    )
    if rows is None:
        with _open_index(db, model, backend, quant, offline) as idx:
            cross = load_reranker(reranker, None, offline, backend=backend) if rerank else None
            try:
                todo = (rerank_top or k) if rerank else 0
                with embed_progress(todo, "reranking") as progress:
                    hits = idx.search(
                        text,
                        k,
                        **options,
                        reranker=cross,
                        rerank_top=rerank_top,
                        instruction=instruction,
                        rerank_progress=progress,
                    )
                if not hits and options["mode"] == "lexical" and idx.lexical_too_common(text):
                    err_console.print(
                        "no lexical results: each word of the query is in most indexed chunks,"
                        " too common to rank by; add a rarer word",
                        highlight=False,
                        soft_wrap=True,
                    )
            finally:
                if cross is not None:
                    cross.close()
        rows = [h.to_json(explain) for h in hits]
    _print_hits(rows, fmt, explain, null)


def _search_on_server(db, text, k, options, model, backend, quant, explain) -> list[dict] | None:
    """The rows from a running `jinaloc serve` of this index when it answers as this process
    would (server/remote.py), without loading numpy, the index or the model; else None."""
    from .common import settings

    s = settings()
    # A test's own loader (Settings.load) is never bypassed.
    if not s.use_server or s.load is not None or backend == "api" or any(s.api.values()):
        return None
    from ..server.remote import search_rows

    local = dict(model=model, backend=backend, quant=quant)
    rows = search_rows(_db_path(db), text, k, options, local, explain)
    if not rows and options["mode"] == "lexical":
        return None  # the in-process path says when the words are too common to rank by
    return rows


@app.command(epilog="[b]Example[/b]\n\n  jinaloc similar notes/ideas.md -k 5 --files")
def similar(
    path: Annotated[Path, typer.Argument(help="A note; indexed ones need no model.")],
    db: DbOpt = None,
    k: TopKOpt = 10,
    path_glob: PathGlobOpt = None,
    min_score: MinScoreOpt = None,
    json_out: JsonOpt = False,
    jsonl: JsonlOpt = False,
    files: FilesOpt = False,
    null: NullOpt = False,
    exact: ExactOpt = False,
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
) -> None:
    """The notes most like a given note.

    An indexed note uses its stored vectors; any other file is embedded on the fly."""
    fmt = output_format(json_out, jsonl, files)
    with _open_index(db, model, backend, quant, offline) as idx:
        hits = idx.similar(path, k, exact=exact, path_glob=path_glob, min_score=min_score)
    _print_hits([h.to_json() for h in hits], fmt, null=null)


@app.command()
def status(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """What the index holds, and which files changed since the last run.

    Roots, files, chunks, model, dim and size of the index file."""
    from ..index import SCHEMA_VERSION, Index

    db_path = _db_path(db)
    try:
        with Index.open(db_path, readonly=True) as idx:
            info = idx.status()
    except SchemaTooNew as e:
        # Still a status: say what the file is and what to do, without a traceback.
        info = {"db": str(db_path), "schema_version": e.version, "supported": SCHEMA_VERSION}
        if json_out:
            write_json({**info, "error": str(e)})
        else:
            out_console.print(f"[bold]{'index':>8}[/]  {escape(str(db_path))}", highlight=False)
            out_console.print(f"[bold]{'schema':>8}[/]  {escape(str(e))}", highlight=False)
        return
    if json_out:
        write_json(info)
        return
    _print_status(info)


def _print_status(info: dict) -> None:
    lines = [
        ("index", f"{info['db']} ({info['db_bytes'] / 1e6:.1f} MB)"),
        (
            "model",
            f"{info['model']} ({info['backend']}, {info['quant']}), dim {info['dim']}"
            + (f" (vectors kept at {info['kept_dim']})" if info["kept_dim"] != info["dim"] else ""),
        ),
        ("files", f"{info['files']:,} ({info['chunks']:,} chunks, {info['tokens']:,} tokens)"),
    ]
    for root in info["roots"]:
        gone = "" if root["exists"] else " (missing)"
        lines.append(("root", f"{shown(root['path'])}: {root['files']:,} files{gone}"))
    c = info["changed"]
    total = sum(c.values())
    lines.append(
        (
            "changed",
            f"{c['new']} new, {c['modified']} modified, {c['renamed']} renamed,"
            f" {c['deleted']} deleted since the last run"
            + (f", {c['reread']} to re-read for tags and dates" if c["reread"] else "")
            + (" (run `jinaloc index` to update)" if total else ""),
        )
    )
    if info["left_out_by_type"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in info["left_out_by_type"].items())
        lines.append(("left out", f"by type: {kinds}"))
    w = info.get("watcher")
    if w:
        last = w["last_applied"] or "nothing yet"
        since = f"running (pid {w['pid']}) since {w['started']}"
        restarts = w.get("restarts")
        failed = f"; restarted {restarts}x ({w['last_error']})" if restarts else ""
        lines.append(("watcher", f"{since}; last change applied {last}{failed}"))
    else:
        lines.append(("watcher", "not running (`jinaloc watch` keeps the index fresh)"))
    for key, value in lines:
        out_console.print(f"[bold]{key:>8}[/]  {escape(value)}", highlight=False, soft_wrap=True)
