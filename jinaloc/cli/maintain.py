"""`jinaloc check`, `vacuum` and `forget`: keeping an index file sound and small."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..errors import JinalocError
from ..output import write_json
from .common import (
    BackendOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    QuantOpt,
    ThreadsOpt,
    err_console,
    load_embedder,
    out_console,
)
from .core import app
from .errors import error_line
from .index import DbOpt, _db_path

if TYPE_CHECKING:
    from ..index import Problem

CHECK_EXAMPLES = """
[b]Examples[/b]

  jinaloc check                      [dim]# exit 0: sound, 1: problems found[/]
  jinaloc check --repair             [dim]# fix them; re-embed only what was lost[/]
  jinaloc check --json | jq .problems
"""


@app.command(epilog=CHECK_EXAMPLES)
def check(
    db: DbOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what is found (a damaged file is kept).")
    ] = False,
    json_out: JsonOpt = False,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Check the index file: SQLite's integrity check, orphan rows, every chunk's text
    against its hash and its vector's size and norm, files missing chunks, the blocks.

    With --repair (under the writer lock): a damaged file is kept as FILE.corrupt and every
    readable row salvaged into a fresh one; rows of no use are dropped and counted; files
    that lost chunks are read and embedded again (only what was lost: kept chunks keep
    their vectors)."""
    from ..index import Index
    from ..index import repair as repair_file

    path = _db_path(db)
    problems = _problems(path)
    result = None
    left = ""
    if problems and repair:
        result = repair_file(path)
        if result.files_to_reembed:
            try:
                with Index.open(path, loader=load_embedder) as idx:
                    idx.use_model(model, backend, quant, offline).update()
            except JinalocError as e:  # repaired all the same: the next `index` embeds them
                left = f"{error_line(e)}; then run `jinaloc index --db {path}`"
        problems_after = _problems(path)
    else:
        problems_after = problems
    if json_out:
        write_json(
            {
                "db": str(path),
                "ok": not problems_after,
                "problems": [p.to_json() for p in problems],
                "repair": result.to_json() if result else None,
                "problems_after_repair": [p.to_json() for p in problems_after] if result else None,
                "reembed_error": left or None,
            }
        )
    else:
        for p in problems:
            out_console.print(f"problem: {escape(p.kind)}: {p.count} {escape(p.detail)}".strip())
        if result:
            _print_repair(result, left)
        if problems_after and not result and not repair:
            hint = f" (`jinaloc check --repair --db {path}` fixes them)"
        else:
            hint = ": see above"
        out_console.print("ok" if not problems_after else f"problems remain{escape(hint)}")
    if problems_after:
        raise typer.Exit(1)


def _print_repair(result, left: str) -> None:
    if result.salvaged:
        kept = ", ".join(f"{n} {table}" for table, n in result.rows_kept.items())
        err_console.print(
            f"salvaged into a fresh file: kept {escape(kept)} rows;"
            f" {result.pages_unreadable} pages and {result.cells_unreadable} rows unreadable;"
            f" the damaged file is kept as {escape(str(result.backup))}",
            highlight=False,
            soft_wrap=True,
        )
    for reason, n in result.rows_dropped.items():
        err_console.print(f"dropped: {n} {escape(reason)}", highlight=False)
    for line in result.fixed:
        err_console.print(f"fixed: {escape(line)}", highlight=False)
    if result.files_to_reembed:
        n = len(result.files_to_reembed)
        if left:
            err_console.print(
                f"[yellow]{n} files to re-embed:[/] {escape(left)}", highlight=False, soft_wrap=True
            )
        else:
            err_console.print(f"re-embedded what {n} files lost", highlight=False)


def _problems(path: Path) -> "list[Problem]":
    from ..index import Index, Problem

    try:
        with Index.open(path, readonly=True) as idx:
            return idx.problems()
    except Exception as e:  # a file too damaged to open is a problem to report, not a crash
        from ..errors import IndexNotFound

        if isinstance(e, IndexNotFound):
            raise
        return [Problem("integrity", 1, str(e))]


@app.command(epilog="[b]Example[/b]\n\n  jinaloc vacuum --db notes.db")
def vacuum(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Rewrite the index file without its free pages (after many deletions)."""
    from ..index import Index

    path = _db_path(db)
    with Index.open(path) as idx:
        before, after = idx.vacuum()
    if json_out:
        write_json({"db": str(path), "bytes_before": before, "bytes_after": after})
    else:
        err_console.print(f"{escape(str(path))}: {before / 1e6:.1f} MB → {after / 1e6:.1f} MB")


@app.command(epilog="[b]Example[/b]\n\n  jinaloc forget ~/notes/archive")
def forget(
    path: Annotated[Path, typer.Argument(help="An indexed folder or file to drop.")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Drop an indexed folder and its files from the index (files another indexed folder
    also covers stay). The folder itself is not touched."""
    from ..index import Index

    with Index.open(_db_path(db)) as idx:
        removed = idx.forget(path)
    if json_out:
        write_json({"forgotten": str(path), "files_removed": removed})
    else:
        err_console.print(f"forgot {escape(str(path))}: {removed} files removed from the index")
